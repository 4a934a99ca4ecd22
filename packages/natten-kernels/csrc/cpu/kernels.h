// Entry points of one ISA variant (compiled once per variant; the host reaches them through KernelTable).
#pragma once

#ifndef NATTEN_ISA
#error "kernels.h is compiled once per ISA variant; see CMakeLists.txt"
#endif

#include "cpu/kernel_args.h"

namespace natten::cpu::NATTEN_ISA {

#define NATTEN_DECLARE_KERNEL(name, Args) \
  template <typename T>                   \
  void name(const Args<T>& a, int64_t begin, int64_t end);
NATTEN_CPU_KERNELS(NATTEN_DECLARE_KERNEL)
#undef NATTEN_DECLARE_KERNEL

// In the file that defines kernel `name`: its instances for the table's types.
#define NATTEN_INSTANTIATE_KERNEL(name, Args)                        \
  template void name<float>(const Args<float>&, int64_t, int64_t); \
  template void name<double>(const Args<double>&, int64_t, int64_t);

const KernelTable& kernel_table();

}  // namespace natten::cpu::NATTEN_ISA
