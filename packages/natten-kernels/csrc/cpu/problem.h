// Host-side argument handling shared by the CPU ops: the parameter block, dtypes, bias tables, task
// splitting. TORCH_CHECKs here are memory-safety nets; user-facing validation happens in Python.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>

#include <optional>
#include <vector>

#include "cpu/kernel_args.h"

namespace natten::cpu {

// Checks kernel_size/dilation/stride/is_causal against the spatial shape; returns the internal rank-3
// geometry.
Geometry parse_geometry(at::IntArrayRef spatial, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                        at::IntArrayRef stride, const c10::List<bool>& is_causal);

void check_tensor(const at::Tensor& t, const char* name, int64_t dim);
void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected);
void check_same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref);

// float32 accumulation for half types and float32, float64 for float64.
at::ScalarType accumulation_type(at::ScalarType t);

// x converted to the accumulation dtype and made contiguous (no copy when it already is).
at::Tensor as_accumulation(const at::Tensor& x, at::ScalarType acc);

// Bias tables [leading..., R0, R1, margin + R2 + margin] (kernel_args.h, Bias); R = 2k-1 per axis.
at::Tensor bias_zeros(at::IntArrayRef leading, const Geometry& g, at::ScalarType dtype);

// rpb ([heads, 2k-1 per axis]) as a bias table of dtype acc; undefined tensor without rpb.
at::Tensor bias_table(const std::optional<at::Tensor>& rpb, const Geometry& g, int64_t heads, int64_t rank,
                      at::ScalarType acc);

// The kernels' view of a bias table whose leading dimensions are ([per task,] head).
template <typename T>
Bias<T> bias_of(const at::Tensor& table, const Geometry& g) {
  if (!table.defined()) return {};
  const int64_t d = table.dim();
  return {static_cast<T*>(table.data_ptr()) + bias_margin(g.axis[2].kernel), table.stride(d - 4), table.size(d - 1)};
}

// Sums per-task bias gradient tables [tasks..., heads, R0, R1, row] over tasks in order and returns them
// shaped and typed like rpb.
at::Tensor reduce_bias_grad(const at::Tensor& partial, const at::Tensor& rpb, const Geometry& g);

// Queries per chunk (neighborhood.h) for `groups` query heads per kv head: enough (query, head) pairs to
// reuse each packed key row many times while the per-chunk buffers stay small.
int64_t chunk_length(const Geometry& g, int64_t groups);

// How many chunk ranges each (batch, kv head) slice of a backward pass is split into (each with its own
// dk/dv accumulators): enough tasks to keep every thread busy.
int64_t backward_splits(int64_t slices, int64_t chunks);

// Sum over the leading (split) dimension, in split order.
at::Tensor reduce_splits(const at::Tensor& acc);

// Spatial sizes of x as a vector, for building output shapes.
std::vector<int64_t> concat_sizes(at::IntArrayRef a, at::IntArrayRef b);

template <typename T>
const TypedKernels<T>& kernels();
template <>
inline const TypedKernels<float>& kernels<float>() {
  return kernel_table().f32;
}
template <>
inline const TypedKernels<double>& kernels<double>() {
  return kernel_table().f64;
}

// Runs `kernel` (an entry of kernels<T>()) over tasks [0, tasks), one task per grain across threads.
template <typename Args>
void run_tasks(void (*kernel)(const Args&, int64_t, int64_t), const Args& a, int64_t tasks) {
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { kernel(a, begin, end); });
}

}  // namespace natten::cpu
