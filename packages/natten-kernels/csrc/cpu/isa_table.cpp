// The kernel table of one ISA variant (compiled once per variant).
#include "cpu/kernels.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
constexpr TypedKernels<T> typed_kernels() {
#define NATTEN_KERNEL_ADDRESS(name, Args) &name<T>,
  return {NATTEN_CPU_KERNELS(NATTEN_KERNEL_ADDRESS)};
#undef NATTEN_KERNEL_ADDRESS
}

const KernelTable& kernel_table() {
  static const KernelTable table{NATTEN_ISA_NAME, typed_kernels<float>(), typed_kernels<double>()};
  return table;
}

}  // namespace natten::cpu::NATTEN_ISA
