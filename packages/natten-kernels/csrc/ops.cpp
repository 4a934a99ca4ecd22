// The natten op schemas (docs/internals.md, "The ops"). The CPU implementations register themselves
// (cpu/fused_ops.cpp, cpu/unfused_ops.cpp); fake (meta) implementations and autograd are registered from
// Python.
#include <torch/library.h>

TORCH_LIBRARY(natten, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "na_fused_forward(Tensor q, Tensor k, Tensor v, Tensor? rpb, Tensor? additional_keys, "
      "Tensor? additional_values, int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal, "
      "float scale, int[] config=[], int[] query_offset=[]) -> (Tensor out, Tensor lse)",
      tags);
  m.def(
      "na_fused_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? grad_lse, Tensor? rpb, Tensor? additional_keys, Tensor? additional_values, int[] kernel_size, "
      "int[] dilation, int[] stride, bool[] is_causal, float scale, int[] config=[], int[] query_offset=[]) -> "
      "(Tensor dq, Tensor dk, "
      "Tensor dv, "
      "Tensor drpb, Tensor d_additional_keys, Tensor d_additional_values)",
      tags);
  m.def(
      "na_qk_forward(Tensor q, Tensor k, Tensor? rpb, int[] kernel_size, int[] dilation, int[] stride, "
      "bool[] is_causal, int[] config=[]) -> Tensor attn",
      tags);
  m.def(
      "na_qk_backward(Tensor grad_attn, Tensor q, Tensor k, Tensor? rpb, int[] kernel_size, int[] dilation, "
      "int[] stride, bool[] is_causal, int[] config=[]) -> (Tensor dq, Tensor dk, Tensor drpb)",
      tags);
  m.def(
      "na_av_forward(Tensor attn, Tensor v, int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal, "
      "int[] config=[]) -> Tensor out",
      tags);
  m.def(
      "na_av_backward(Tensor grad_out, Tensor attn, Tensor v, int[] kernel_size, int[] dilation, int[] stride, "
      "bool[] is_causal, int[] config=[]) -> (Tensor grad_attn, Tensor dv)",
      tags);
}
