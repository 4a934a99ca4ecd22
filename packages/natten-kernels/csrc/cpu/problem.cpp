#include "cpu/problem.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace natten::cpu {

Geometry parse_geometry(at::IntArrayRef spatial, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                        at::IntArrayRef stride, const c10::List<bool>& is_causal) {
  const int64_t rank = static_cast<int64_t>(kernel_size.size());
  TORCH_CHECK(rank >= 1 && rank <= kRank, "natten: kernel_size must have 1 to 3 entries, got ", rank);
  TORCH_CHECK(static_cast<int64_t>(spatial.size()) == rank && static_cast<int64_t>(dilation.size()) == rank &&
                  static_cast<int64_t>(stride.size()) == rank && static_cast<int64_t>(is_causal.size()) == rank,
              "natten: kernel_size, dilation, stride and is_causal must each have one entry per spatial axis (",
              spatial.size(), "), got ", kernel_size.size(), ", ", dilation.size(), ", ", stride.size(), ", ",
              is_causal.size());
  bool causal[kRank];
  for (int64_t i = 0; i < rank; ++i) {
    causal[i] = is_causal.get(i);
    TORCH_CHECK(kernel_size[i] >= 1 && dilation[i] >= 1, "natten: kernel_size and dilation must be positive, got ",
                kernel_size, " and ", dilation);
    TORCH_CHECK(stride[i] >= 1 && stride[i] <= kernel_size[i], "natten: stride must be in [1, kernel_size], got ",
                stride, " for kernel_size ", kernel_size);
    TORCH_CHECK(kernel_size[i] <= spatial[i] && dilation[i] <= spatial[i] / kernel_size[i],
                "natten: kernel_size * dilation must not exceed the input size on any axis; axis ", i, ": ",
                kernel_size[i], " * ", dilation[i], " > ", spatial[i]);
  }
  return make_geometry(rank, spatial.data(), kernel_size.data(), dilation.data(), stride.data(), causal);
}

void check_tensor(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "natten: ", name, " must be a CPU tensor for the CPU kernels, got ", t.device());
  TORCH_CHECK(t.is_floating_point(), "natten: ", name, " must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(dim < 0 || t.dim() == dim, "natten: ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, "natten: ", name,
              " must be float16, bfloat16, float32 or float64, got ", s);
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "natten: ", name, " must have shape ", expected, ", got ", t.sizes());
}

void check_same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "natten: ", name, " must have dtype ", ref.scalar_type(),
              ", got ", t.scalar_type());
}

at::ScalarType accumulation_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor as_accumulation(const at::Tensor& x, at::ScalarType acc) {
  return x.to(acc).contiguous();
}

at::Tensor bias_zeros(at::IntArrayRef leading, const Geometry& g, at::ScalarType dtype) {
  std::vector<int64_t> sizes(leading.begin(), leading.end());
  const int64_t k2 = g.axis[2].kernel;
  sizes.insert(sizes.end(), {2 * g.axis[0].kernel - 1, 2 * g.axis[1].kernel - 1, 2 * k2 - 1 + 2 * bias_margin(k2)});
  return at::zeros(sizes, at::TensorOptions().dtype(dtype));
}

at::Tensor bias_table(const std::optional<at::Tensor>& rpb, const Geometry& g, int64_t heads, int64_t rank,
                      at::ScalarType acc) {
  if (!rpb.has_value() || !rpb->defined()) return at::Tensor();
  check_tensor(*rpb, "rpb", rank + 1);
  std::vector<int64_t> expected{heads};
  for (int64_t i = kRank - rank; i < kRank; ++i) expected.push_back(2 * g.axis[i].kernel - 1);
  check_shape(*rpb, "rpb", expected);
  const int64_t r0 = 2 * g.axis[0].kernel - 1, r1 = 2 * g.axis[1].kernel - 1, r2 = 2 * g.axis[2].kernel - 1;
  auto table = bias_zeros({heads}, g, acc);
  table.narrow(3, bias_margin(g.axis[2].kernel), r2).copy_(rpb->reshape({heads, r0, r1, r2}));
  return table;
}

at::Tensor reduce_bias_grad(const at::Tensor& partial, const at::Tensor& rpb, const Geometry& g) {
  const int64_t heads = rpb.size(0);
  auto per_task = partial.view({-1, heads, partial.size(-3), partial.size(-2), partial.size(-1)});
  if (per_task.size(0) == 0) return at::zeros_like(rpb);
  auto sum = reduce_splits(per_task);
  const int64_t r2 = 2 * g.axis[2].kernel - 1;
  auto out = at::empty(rpb.sizes(), rpb.options());
  out.view({heads, sum.size(1), sum.size(2), r2}).copy_(sum.narrow(3, bias_margin(g.axis[2].kernel), r2));
  return out;
}

int64_t chunk_length(const Geometry& g, int64_t groups) {
  // Chunks never span lines, so longer ones would only grow the per-thread buffers.
  // groups is 0 when there are no query heads (an empty problem): no division by it.
  return std::min(std::max<int64_t>(1, 32 / std::max<int64_t>(groups, 1)), std::max<int64_t>(g.axis[2].length, 1));
}

int64_t backward_splits(int64_t slices, int64_t chunks) {
  // The fewest splits that spread the tasks evenly over the threads (or give every thread two or more),
  // since every split costs a zeroed accumulator and a reduction pass.
  const int64_t threads = at::get_num_threads();
  if (slices == 0) return 1;
  int64_t splits = 1;
  while ((slices * splits) % threads != 0 && slices * splits < 2 * threads) ++splits;
  return std::max<int64_t>(1, std::min<int64_t>(splits, chunks / 4));
}

at::Tensor reduce_splits(const at::Tensor& acc) {
  const int64_t splits = acc.size(0);
  if (splits == 1) return acc.select(0, 0);
  TORCH_CHECK(acc.is_contiguous(), "natten: internal error: split accumulators must be contiguous");
  auto total = at::empty(acc.sizes().slice(1), acc.options());
  const int64_t n = total.numel();
  // One pass over all splits, each element summed in split order whatever the thread count.
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "natten_reduce_splits", [&] {
    const scalar_t* in = acc.const_data_ptr<scalar_t>();
    scalar_t* out = total.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      std::copy(in + begin, in + end, out + begin);
      for (int64_t s = 1; s < splits; ++s) {
        const scalar_t* part = in + s * n;
        for (int64_t i = begin; i < end; ++i) out[i] += part[i];
      }
    });
  });
  return total;
}

std::vector<int64_t> concat_sizes(at::IntArrayRef a, at::IntArrayRef b) {
  std::vector<int64_t> out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

}  // namespace natten::cpu
