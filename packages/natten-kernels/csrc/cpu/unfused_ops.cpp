// Host side of the unfused CPU ops (heads-first layouts, attention tensor [B, H, *S, K]) and their
// registration (schemas in ops.cpp, semantics in docs/internals.md).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/packing.h"
#include "cpu/problem.h"

namespace natten::cpu {

namespace {

struct UnfusedProblem {
  Geometry geometry;
  int64_t rank = 0, batch = 0, heads = 0;
  std::vector<int64_t> spatial;
  std::vector<int64_t> prefix;  // [B, H, *S]
};

// `x` is the heads-first tensor that fixes the problem ([B, H, *S, C]).
UnfusedProblem check_unfused(const at::Tensor& x, const char* name, at::IntArrayRef kernel_size,
                             at::IntArrayRef dilation, at::IntArrayRef stride, const c10::List<bool>& is_causal) {
  UnfusedProblem p;
  p.rank = static_cast<int64_t>(kernel_size.size());
  check_tensor(x, name, p.rank + 3);
  p.batch = x.size(0);
  p.heads = x.size(1);
  p.spatial.assign(x.sizes().begin() + 2, x.sizes().begin() + 2 + p.rank);
  p.geometry = parse_geometry(p.spatial, kernel_size, dilation, stride, is_causal);
  p.prefix = concat_sizes({p.batch, p.heads}, p.spatial);
  return p;
}

Shape unfused_shape(const UnfusedProblem& p, int64_t dim, int64_t dim_v) {
  return Shape{p.geometry, p.batch, p.heads, p.heads, dim, dim_v};
}

// q fixes the problem; k must match it.
UnfusedProblem check_qk(const at::Tensor& q, const at::Tensor& k, at::IntArrayRef kernel_size,
                        at::IntArrayRef dilation, at::IntArrayRef stride, const c10::List<bool>& is_causal) {
  auto p = check_unfused(q, "q", kernel_size, dilation, stride, is_causal);
  check_tensor(k, "k", p.rank + 3);
  check_same_dtype(k, "k", q);
  check_shape(k, "k", q.sizes());
  return p;
}

at::Tensor check_attn(const at::Tensor& attn, const char* name, const UnfusedProblem& p) {
  check_tensor(attn, name, p.rank + 3);
  check_shape(attn, name, concat_sizes(p.prefix, {kernel_volume(p.geometry)}));
  return attn;
}

// Backward tasks are (split, b, h); the splits of the queries' chunks keep every thread busy.
int64_t unfused_splits(const UnfusedProblem& p) {
  return backward_splits(p.batch * p.heads, chunk_count(p.geometry, chunk_length(p.geometry, 1)));
}

// The gradient of heads-first keys or values `x`, accumulated per split (`g` must outlive it).
RowsGradient token_gradient(const at::Tensor& x, const Geometry& g, int64_t splits, at::ScalarType acc) {
  return RowsGradient(
      x, [&g](const at::Tensor& t) { return token_view(t, g, false); }, g.axis[2].dilation, splits, acc);
}

// Result tensor in `like`'s dtype plus the accumulation-typed buffer the kernels write (the same tensor
// when the dtypes agree).
std::pair<at::Tensor, at::Tensor> output_pair(at::IntArrayRef sizes, const at::TensorOptions& options,
                                              at::ScalarType acc) {
  auto result = at::empty(sizes, options);
  auto buffer = c10::typeMetaToScalarType(options.dtype()) == acc ? result : at::empty(sizes, options.dtype(acc));
  return {result, buffer};
}

void finish(const std::pair<at::Tensor, at::Tensor>& out) {
  if (!out.second.is_same(out.first)) out.first.copy_(out.second);
}

template <typename T>
at::Tensor qk_forward_impl(const UnfusedProblem& p, const at::Tensor& q_in, const at::Tensor& k_in,
                           const std::optional<at::Tensor>& rpb) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const auto q = as_accumulation(q_in, acc);
  const auto k_cols = pack_columns(token_view(k_in.contiguous(), g, false), g.axis[2].dilation, acc);
  const auto bias = bias_table(rpb, g, p.heads, p.rank, acc);
  const auto attn = output_pair(concat_sizes(p.prefix, {kernel_volume(g)}), q_in.options(), acc);

  QKForwardArgs<T> a;
  a.shape = unfused_shape(p, q.size(-1), 0);
  a.q = tokens_of<const T>(token_view(q, g, false));
  a.k_cols = packed_of<const T>(k_cols);
  a.rpb = bias_of<const T>(bias, g);
  a.attn = attn.second.data_ptr<T>();
  a.query_block = chunk_length(g, 1);
  run_tasks(kernels<T>().qk_forward, a, p.batch * p.heads * chunk_count(g, a.query_block));
  finish(attn);
  return attn.first;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> qk_backward_impl(const UnfusedProblem& p, const at::Tensor& dattn_in,
                                                                const at::Tensor& q_in, const at::Tensor& k_in,
                                                                const std::optional<at::Tensor>& rpb) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const auto dattn = as_accumulation(dattn_in, acc);
  const auto q = as_accumulation(q_in, acc);
  const auto k_rows = rows_operand(token_view(k_in.contiguous(), g, false), g.axis[2].dilation, acc);
  const auto bias = bias_table(rpb, g, p.heads, p.rank, acc);
  const int64_t splits = unfused_splits(p);
  RowsGradient dk = token_gradient(k_in, g, splits, acc);
  const auto dq = output_pair(q_in.sizes(), q_in.options(), acc);

  QKBackwardArgs<T> a;
  a.shape = unfused_shape(p, q.size(-1), 0);
  a.dattn = dattn.data_ptr<T>();
  a.q = tokens_of<const T>(token_view(q, g, false));
  a.k_rows = packed_of<const T>(k_rows);
  a.dq = tokens_of<T>(token_view(dq.second, g, false));
  a.query_block = chunk_length(g, 1);
  a.splits = splits;
  a.dk = packed_of<T>(dk.packed());
  at::Tensor drpb_acc;
  if (bias.defined()) {
    drpb_acc = bias_zeros({splits, p.batch, p.heads}, g, acc);
    a.drpb = bias_of<T>(drpb_acc, g);
  }
  run_tasks(kernels<T>().qk_backward, a, splits * p.batch * p.heads);

  finish(dq);
  const auto drpb = bias.defined() ? reduce_bias_grad(drpb_acc, *rpb, g) : at::empty({0}, q_in.options());
  return {dq.first, dk.finish(), drpb};
}

template <typename T>
at::Tensor av_forward_impl(const UnfusedProblem& p, const at::Tensor& attn_in, const at::Tensor& v_in) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const auto attn = as_accumulation(attn_in, acc);
  const auto v_rows = rows_operand(token_view(v_in.contiguous(), g, false), g.axis[2].dilation, acc);
  const auto out = output_pair(v_in.sizes(), v_in.options(), acc);

  AVForwardArgs<T> a;
  a.shape = unfused_shape(p, 0, v_in.size(-1));
  a.attn = attn.data_ptr<T>();
  a.v_rows = packed_of<const T>(v_rows);
  a.out = tokens_of<T>(token_view(out.second, g, false));
  a.query_block = chunk_length(g, 1);
  run_tasks(kernels<T>().av_forward, a, p.batch * p.heads * chunk_count(g, a.query_block));
  finish(out);
  return out.first;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> av_backward_impl(const UnfusedProblem& p, const at::Tensor& dout_in,
                                                    const at::Tensor& attn_in, const at::Tensor& v_in) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const auto dout = as_accumulation(dout_in, acc);
  const auto attn = as_accumulation(attn_in, acc);
  const auto v_cols = pack_columns(token_view(v_in.contiguous(), g, false), g.axis[2].dilation, acc);
  const int64_t splits = unfused_splits(p);
  RowsGradient dv = token_gradient(v_in, g, splits, acc);
  const auto dattn = output_pair(attn_in.sizes(), attn_in.options(), acc);

  AVBackwardArgs<T> a;
  a.shape = unfused_shape(p, 0, v_in.size(-1));
  a.dout = tokens_of<const T>(token_view(dout, g, false));
  a.attn = attn.data_ptr<T>();
  a.v_cols = packed_of<const T>(v_cols);
  a.dattn = dattn.second.data_ptr<T>();
  a.query_block = chunk_length(g, 1);
  a.splits = splits;
  a.dv = packed_of<T>(dv.packed());
  run_tasks(kernels<T>().av_backward, a, splits * p.batch * p.heads);

  finish(dattn);
  return {dattn.first, dv.finish()};
}

// `config` selects a kernel variant on other devices (CUDA: exact or tensor-core); the CPU has one.
at::Tensor na_qk_forward(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& rpb,
                         at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef stride,
                         const c10::List<bool>& is_causal,
    at::IntArrayRef /*config*/) {
  const auto p = check_qk(q, k, kernel_size, dilation, stride, is_causal);
  if (q.scalar_type() == at::kDouble) return qk_forward_impl<double>(p, q, k, rpb);
  return qk_forward_impl<float>(p, q, k, rpb);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> na_qk_backward(const at::Tensor& grad_attn, const at::Tensor& q,
                                                              const at::Tensor& k,
                                                              const std::optional<at::Tensor>& rpb,
                                                              at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                                              at::IntArrayRef stride,
                                                              const c10::List<bool>& is_causal,
    at::IntArrayRef /*config*/) {
  const auto p = check_qk(q, k, kernel_size, dilation, stride, is_causal);
  check_attn(grad_attn, "grad_attn", p);
  if (q.scalar_type() == at::kDouble) return qk_backward_impl<double>(p, grad_attn, q, k, rpb);
  return qk_backward_impl<float>(p, grad_attn, q, k, rpb);
}

at::Tensor na_av_forward(const at::Tensor& attn, const at::Tensor& v, at::IntArrayRef kernel_size,
                         at::IntArrayRef dilation, at::IntArrayRef stride, const c10::List<bool>& is_causal,
    at::IntArrayRef /*config*/) {
  const auto p = check_unfused(v, "v", kernel_size, dilation, stride, is_causal);
  check_attn(attn, "attn", p);
  if (v.scalar_type() == at::kDouble) return av_forward_impl<double>(p, attn, v);
  return av_forward_impl<float>(p, attn, v);
}

std::tuple<at::Tensor, at::Tensor> na_av_backward(const at::Tensor& grad_out, const at::Tensor& attn,
                                                  const at::Tensor& v, at::IntArrayRef kernel_size,
                                                  at::IntArrayRef dilation, at::IntArrayRef stride,
                                                  const c10::List<bool>& is_causal,
    at::IntArrayRef /*config*/) {
  const auto p = check_unfused(v, "v", kernel_size, dilation, stride, is_causal);
  check_attn(attn, "attn", p);
  check_tensor(grad_out, "grad_out", p.rank + 3);
  check_shape(grad_out, "grad_out", v.sizes());
  if (v.scalar_type() == at::kDouble) return av_backward_impl<double>(p, grad_out, attn, v);
  return av_backward_impl<float>(p, grad_out, attn, v);
}

}  // namespace

}  // namespace natten::cpu

TORCH_LIBRARY_IMPL(natten, CPU, m) {
  m.impl("na_qk_forward", &natten::cpu::na_qk_forward);
  m.impl("na_qk_backward", &natten::cpu::na_qk_backward);
  m.impl("na_av_forward", &natten::cpu::na_av_forward);
  m.impl("na_av_backward", &natten::cpu::na_av_backward);
}
