// Host side of the fused CPU ops: checks, packing, threading, reductions (heads-last layouts), and their
// registration (schemas in ops.cpp, semantics in docs/internals.md).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/packing.h"
#include "cpu/problem.h"

namespace natten::cpu {

namespace {

struct FusedProblem {
  Geometry geometry;
  Shape shape;
  int64_t rank = 0;
  int64_t n_add = 0;  // -1: no additional kv
  std::vector<int64_t> spatial;
};

FusedProblem check_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& k_add, const std::optional<at::Tensor>& v_add,
                         at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef stride,
                         const c10::List<bool>& is_causal) {
  FusedProblem p;
  p.rank = static_cast<int64_t>(kernel_size.size());
  check_tensor(q, "q", p.rank + 3);
  check_tensor(k, "k", p.rank + 3);
  check_tensor(v, "v", p.rank + 3);
  check_same_dtype(k, "k", q);
  check_same_dtype(v, "v", q);
  p.spatial.assign(q.sizes().begin() + 1, q.sizes().begin() + 1 + p.rank);
  p.geometry = parse_geometry(p.spatial, kernel_size, dilation, stride, is_causal);
  const int64_t B = q.size(0), Hq = q.size(-2), D = q.size(-1), Hkv = k.size(-2), Dv = v.size(-1);
  TORCH_CHECK(Hkv >= 1 && Hq % Hkv == 0, "natten: key/value heads (", Hkv, ") must divide query heads (", Hq, ")");
  check_shape(k, "k", concat_sizes(concat_sizes({B}, p.spatial), {Hkv, D}));
  check_shape(v, "v", concat_sizes(concat_sizes({B}, p.spatial), {Hkv, Dv}));
  p.shape = Shape{p.geometry, B, Hq, Hkv, D, Dv};
  const bool has_k = k_add.has_value() && k_add->defined(), has_v = v_add.has_value() && v_add->defined();
  TORCH_CHECK(has_k == has_v, "natten: additional_keys and additional_values must be given together");
  p.n_add = -1;
  if (has_k) {
    check_tensor(*k_add, "additional_keys", 4);
    check_tensor(*v_add, "additional_values", 4);
    check_same_dtype(*k_add, "additional_keys", q);
    check_same_dtype(*v_add, "additional_values", q);
    p.n_add = k_add->size(1);
    check_shape(*k_add, "additional_keys", {B, p.n_add, Hkv, D});
    check_shape(*v_add, "additional_values", {B, p.n_add, Hkv, Dv});
  }
  return p;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> fused_forward_impl(const FusedProblem& p, const at::Tensor& q_in,
                                                      const at::Tensor& k_in, const at::Tensor& v_in,
                                                      const std::optional<at::Tensor>& rpb,
                                                      const std::optional<at::Tensor>& k_add,
                                                      const std::optional<at::Tensor>& v_add, double scale,
                                                      int64_t query_block) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const Shape& sh = p.shape;
  const int64_t d2 = g.axis[2].dilation;

  const auto q = as_accumulation(q_in, acc);
  const auto k_cols = pack_columns(token_view(k_in.contiguous(), g, true), d2, acc);
  const auto v_rows = rows_operand(token_view(v_in.contiguous(), g, true), d2, acc);
  const auto bias = bias_table(rpb, g, sh.heads, p.rank, acc);

  const auto prefix = concat_sizes({sh.batch}, p.spatial);
  auto out = at::empty(concat_sizes(prefix, {sh.heads, sh.dim_v}), q_in.options());
  auto out_acc = q_in.scalar_type() == acc ? out : at::empty(out.sizes(), q.options());
  auto lse = at::empty(concat_sizes(prefix, {sh.heads}), q.options());

  FusedForwardArgs<T> a;
  a.shape = sh;
  a.scale = static_cast<T>(scale);
  a.q = tokens_of<const T>(token_view(q, g, true));
  a.out = tokens_of<T>(token_view(out_acc, g, true));
  a.lse = tokens_of<T>(token_view(lse.unsqueeze(-1), g, true));
  a.k_cols = packed_of<const T>(k_cols);
  a.v_rows = packed_of<const T>(v_rows);
  a.rpb = bias_of<const T>(bias, g);
  PackedTensor k_add_cols, v_add_rows;
  if (p.n_add > 0) {
    k_add_cols = pack_columns(additional_view(k_add->contiguous()), 1, acc);
    v_add_rows = rows_operand(additional_view(v_add->contiguous()), 1, acc);
    a.n_add = p.n_add;
    a.k_add_cols = packed_of<const T>(k_add_cols);
    a.v_add_rows = packed_of<const T>(v_add_rows);
  }
  a.query_block = query_block;

  run_tasks(kernels<T>().fused_forward, a, sh.batch * sh.kv_heads * chunk_count(g, a.query_block));
  if (!out_acc.is_same(out)) out.copy_(out_acc);
  return {out, lse};
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward_impl(
    const FusedProblem& p, const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const std::optional<at::Tensor>& dlse_in, const std::optional<at::Tensor>& rpb,
    const std::optional<at::Tensor>& k_add, const std::optional<at::Tensor>& v_add, double scale,
    int64_t requested_splits) {
  const at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Geometry& g = p.geometry;
  const Shape& sh = p.shape;
  const int64_t d2 = g.axis[2].dilation;
  const int64_t groups = sh.heads / sh.kv_heads;

  const auto q = as_accumulation(q_in, acc);
  const auto dout = as_accumulation(dout_in, acc);
  const auto out = as_accumulation(out_in, acc);
  const auto lse = as_accumulation(lse_in, acc);
  const bool has_dlse = dlse_in.has_value() && dlse_in->defined();
  const auto dlse = has_dlse ? as_accumulation(*dlse_in, acc) : at::Tensor();
  const auto k6 = token_view(k_in.contiguous(), g, true);
  const auto v6 = token_view(v_in.contiguous(), g, true);
  const auto k_cols = pack_columns(k6, d2, acc);
  const auto k_rows = rows_operand(k6, d2, acc);
  const auto v_cols = pack_columns(v6, d2, acc);
  const auto bias = bias_table(rpb, g, sh.heads, p.rank, acc);

  const int64_t len = chunk_length(g, groups);
  const int64_t chunks = chunk_count(g, len);
  const int64_t splits = requested_splits > 0 ? std::min(requested_splits, std::max<int64_t>(chunks, 1))
                                              : backward_splits(sh.batch * sh.kv_heads, chunks);
  const auto view = [&g](const at::Tensor& x) { return token_view(x, g, true); };
  RowsGradient dk(k_in, view, d2, splits, acc), dv(v_in, view, d2, splits, acc);
  auto dq = at::empty(q_in.sizes(), q_in.options());
  auto dq_acc = q_in.scalar_type() == acc ? dq : at::empty(q_in.sizes(), q.options());

  FusedBackwardArgs<T> a;
  a.shape = sh;
  a.scale = static_cast<T>(scale);
  a.q = tokens_of<const T>(token_view(q, g, true));
  a.out = tokens_of<const T>(token_view(out, g, true));
  a.dout = tokens_of<const T>(token_view(dout, g, true));
  a.lse = tokens_of<const T>(token_view(lse.unsqueeze(-1), g, true));
  if (has_dlse) a.dlse = tokens_of<const T>(token_view(dlse.unsqueeze(-1), g, true));
  a.dq = tokens_of<T>(token_view(dq_acc, g, true));
  a.k_cols = packed_of<const T>(k_cols);
  a.k_rows = packed_of<const T>(k_rows);
  a.v_cols = packed_of<const T>(v_cols);
  a.query_block = len;
  a.splits = splits;
  a.dk = packed_of<T>(dk.packed());
  a.dv = packed_of<T>(dv.packed());

  at::Tensor drpb_acc;
  if (bias.defined()) {
    a.rpb = bias_of<const T>(bias, g);
    drpb_acc = bias_zeros({splits, sh.batch, sh.kv_heads, groups}, g, acc);
    a.drpb = bias_of<T>(drpb_acc, g);
    a.drpb_task = drpb_acc.stride(2);
  }

  PackedTensor k_add_cols, k_add_rows, v_add_cols;
  std::optional<RowsGradient> dk_add, dv_add;
  if (p.n_add > 0) {
    const auto ka6 = additional_view(k_add->contiguous());
    const auto va6 = additional_view(v_add->contiguous());
    k_add_cols = pack_columns(ka6, 1, acc);
    k_add_rows = rows_operand(ka6, 1, acc);
    v_add_cols = pack_columns(va6, 1, acc);
    dk_add.emplace(*k_add, additional_view, 1, splits, acc);
    dv_add.emplace(*v_add, additional_view, 1, splits, acc);
    a.n_add = p.n_add;
    a.k_add_cols = packed_of<const T>(k_add_cols);
    a.k_add_rows = packed_of<const T>(k_add_rows);
    a.v_add_cols = packed_of<const T>(v_add_cols);
    a.dk_add = packed_of<T>(dk_add->packed());
    a.dv_add = packed_of<T>(dv_add->packed());
  }

  run_tasks(kernels<T>().fused_backward, a, splits * sh.batch * sh.kv_heads);

  if (!dq_acc.is_same(dq)) dq.copy_(dq_acc);
  const auto drpb = bias.defined() ? reduce_bias_grad(drpb_acc, *rpb, g) : at::empty({0}, q_in.options());
  at::Tensor d_add_keys, d_add_values;
  if (p.n_add > 0) {
    d_add_keys = dk_add->finish();
    d_add_values = dv_add->finish();
  } else if (p.n_add == 0) {
    d_add_keys = at::empty(k_add->sizes(), k_add->options());
    d_add_values = at::empty(v_add->sizes(), v_add->options());
  } else {
    d_add_keys = at::empty({0}, q_in.options());
    d_add_values = at::empty({0}, q_in.options());
  }
  return {dq, dk.finish(), dv.finish(), drpb, d_add_keys, d_add_values};
}

// A query box inside the key grid (natten.functional pads the queries instead for backends without the
// "query_box" feature, as this one).
void check_no_query_offset(at::IntArrayRef query_offset) {
  TORCH_CHECK(query_offset.empty(), "natten: the CPU kernels take no query_offset (queries and keys share one grid), ",
              "got ", query_offset);
}

// `config`: forward [queries per task], backward [query splits]; empty picks the defaults.
std::tuple<at::Tensor, at::Tensor> na_fused_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& rpb,
                                                    const std::optional<at::Tensor>& additional_keys,
                                                    const std::optional<at::Tensor>& additional_values,
                                                    at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                                    at::IntArrayRef stride, const c10::List<bool>& is_causal,
                                                    double scale, at::IntArrayRef config,
                                                    at::IntArrayRef query_offset) {
  check_no_query_offset(query_offset);
  const auto p = check_fused(q, k, v, additional_keys, additional_values, kernel_size, dilation, stride, is_causal);
  TORCH_CHECK(config.size() <= 1 && (config.empty() || config[0] >= 1),
              "natten: the CPU forward config is [] or [queries per task >= 1], got ", config);
  const int64_t query_block = config.empty() ? chunk_length(p.geometry, p.shape.heads / p.shape.kv_heads)
                                             : std::min(config[0], p.geometry.axis[2].length);
  if (q.scalar_type() == at::kDouble) {
    return fused_forward_impl<double>(p, q, k, v, rpb, additional_keys, additional_values, scale, query_block);
  }
  return fused_forward_impl<float>(p, q, k, v, rpb, additional_keys, additional_values, scale, query_block);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> na_fused_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& grad_lse,
    const std::optional<at::Tensor>& rpb, const std::optional<at::Tensor>& additional_keys,
    const std::optional<at::Tensor>& additional_values, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
    at::IntArrayRef stride, const c10::List<bool>& is_causal, double scale, at::IntArrayRef config,
    at::IntArrayRef query_offset) {
  check_no_query_offset(query_offset);
  const auto p = check_fused(q, k, v, additional_keys, additional_values, kernel_size, dilation, stride, is_causal);
  const auto prefix = concat_sizes({p.shape.batch}, p.spatial);
  const auto out_shape = concat_sizes(prefix, {p.shape.heads, p.shape.dim_v});
  const auto lse_shape = concat_sizes(prefix, {p.shape.heads});
  check_tensor(grad_out, "grad_out", -1);
  check_tensor(out, "out", -1);
  check_tensor(lse, "lse", -1);
  check_shape(grad_out, "grad_out", out_shape);
  check_shape(out, "out", out_shape);
  check_shape(lse, "lse", lse_shape);
  if (grad_lse.has_value() && grad_lse->defined()) {
    check_tensor(*grad_lse, "grad_lse", -1);
    check_shape(*grad_lse, "grad_lse", lse_shape);
  }
  TORCH_CHECK(config.size() <= 1 && (config.empty() || config[0] >= 1),
              "natten: the CPU backward config is [] or [query splits >= 1], got ", config);
  const int64_t splits = config.empty() ? 0 : config[0];
  if (q.scalar_type() == at::kDouble) {
    return fused_backward_impl<double>(p, grad_out, q, k, v, out, lse, grad_lse, rpb, additional_keys,
                                       additional_values, scale, splits);
  }
  return fused_backward_impl<float>(p, grad_out, q, k, v, out, lse, grad_lse, rpb, additional_keys,
                                    additional_values, scale, splits);
}

}  // namespace

}  // namespace natten::cpu

TORCH_LIBRARY_IMPL(natten, CPU, m) {
  m.impl("na_fused_forward", &natten::cpu::na_fused_forward);
  m.impl("na_fused_backward", &natten::cpu::na_fused_backward);
}
