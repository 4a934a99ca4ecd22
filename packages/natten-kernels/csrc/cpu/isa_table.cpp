// The kernel table of one ISA variant (compiled once per variant).
#include "cpu/kernels.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
constexpr TypedKernels<T> typed_kernels() {
  return {&fused_forward<T>, &fused_backward<T>, &qk_forward<T>, &qk_backward<T>, &av_forward<T>, &av_backward<T>};
}

const KernelTable& kernel_table() {
  static const KernelTable table{NATTEN_ISA_NAME, typed_kernels<float>(), typed_kernels<double>()};
  return table;
}

}  // namespace natten::cpu::NATTEN_ISA
