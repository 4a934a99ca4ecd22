// Entry points of one ISA variant (compiled once per variant; the host reaches them through KernelTable).
#pragma once

#ifndef NATTEN_ISA
#error "kernels.h is compiled once per ISA variant; see CMakeLists.txt"
#endif

#include "cpu/kernel_args.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
void fused_forward(const FusedForwardArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void fused_backward(const FusedBackwardArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void qk_forward(const QKForwardArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void qk_backward(const QKBackwardArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void av_forward(const AVForwardArgs<T>& a, int64_t begin, int64_t end);
template <typename T>
void av_backward(const AVBackwardArgs<T>& a, int64_t begin, int64_t end);

const KernelTable& kernel_table();

}  // namespace natten::cpu::NATTEN_ISA
