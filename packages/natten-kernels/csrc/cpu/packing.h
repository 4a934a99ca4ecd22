// Host-side layout transforms between user tensors and the per-(batch, head) operands the kernels read
// (kernel_args.h, Packed). Copies also convert to the accumulation dtype, so half inputs are converted
// once per key rather than once per use.
//
// Packed copies keep axes 0 and 1 as they are and de-interleave the innermost axis by dilation group
// (group g's keys at g * group_stride + local index), so the keys of a window are contiguous.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "cpu/kernel_args.h"

namespace natten::cpu {

// x ([B, L0*L1*L2 spatial..., H, C] heads-last or [B, H, spatial..., C] heads-first; must be contiguous)
// viewed as [B, H, L0, L1, L2, C].
at::Tensor token_view(const at::Tensor& x, const Geometry& g, bool heads_last);
// Additional keys/values [B, N, H, C] viewed as [B, H, 1, 1, N, C].
at::Tensor additional_view(const at::Tensor& x);

template <typename T>
Tokens<T> tokens_of(const at::Tensor& view6) {
  return {static_cast<T*>(view6.data_ptr()), view6.stride(0), view6.stride(1), view6.stride(2), view6.stride(3),
          view6.stride(4)};
}

struct PackedTensor {
  at::Tensor data;
  int64_t split = 0, batch = 0, head = 0, row = 0, key = 0, channel = 0;
};

template <typename T>
Packed<T> packed_of(const PackedTensor& p) {
  if (!p.data.defined()) return {};
  return {static_cast<T*>(p.data.data_ptr()), p.split, p.batch, p.head, p.row, p.key, p.channel};
}

// Channel-major copy [B, H, L0, L1, C, inner + padding] for dot products vectorized across keys.
PackedTensor pack_columns(const at::Tensor& x6, int64_t dilation, at::ScalarType dtype);

// Key-major operand for axpys vectorized across channels: x6 itself when it already has that layout
// (dtype, no dilation on the innermost axis, channels a multiple of kLanePad), a packed copy otherwise.
PackedTensor rows_operand(const at::Tensor& x6, int64_t dilation, at::ScalarType dtype);

// A gradient shaped and typed like `input`, accumulated by `splits` groups of tasks in key-major layout:
// directly in the result when it has that layout and there is one split, otherwise in zeroed per-split
// buffers that finish() sums in order and unpacks.
class RowsGradient {
 public:
  using View = std::function<at::Tensor(const at::Tensor&)>;  // the tensor as [B, H, L0, L1, L2, C]
  RowsGradient(const at::Tensor& input, View view, int64_t dilation, int64_t splits, at::ScalarType acc);
  const PackedTensor& packed() const { return packed_; }
  at::Tensor finish();

 private:
  at::Tensor result_;
  View view_;
  int64_t dilation_;
  bool direct_;
  PackedTensor packed_;
};

}  // namespace natten::cpu
