#include "cpu/packing.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/problem.h"

namespace natten::cpu {

namespace {

Axis inner_axis(int64_t length, int64_t dilation) {
  Axis a;
  a.length = length;
  a.dilation = dilation;
  return a;
}

int64_t pad_channels(int64_t c) {
  return (c + kLanePad - 1) / kLanePad * kLanePad;
}

// kKeyPad keys of room past the row, and an odd number of cache lines per channel so that the channels
// of one key column fall into different L1 sets.
int64_t pad_columns(int64_t inner, int64_t element_size) {
  const int64_t line = 64 / element_size;
  int64_t p = (inner + kKeyPad + line - 1) / line * line;
  if ((p / line) % 2 == 0) p += line;
  return p;
}

// A plain loop rather than copy_() of a transposed view, which TensorIterator handles poorly. Tasks are
// key rows with all their heads and keys are read in memory order (all heads of a token together for
// heads-last inputs): strided walks over one head at a time stall on memory here. Blocks of 16 keys go
// through a tile so that stores run along cache lines.
template <typename T>
void transpose_into_columns(const at::Tensor& x6, int64_t dilation, int64_t m, at::Tensor& out) {
  constexpr int64_t kBlock = 16;
  const int64_t H = x6.size(1), L0 = x6.size(2), L1 = x6.size(3), L2 = x6.size(4), C = x6.size(5);
  const int64_t padded = out.size(5), inner = dilation * m;
  const T* src = x6.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  const int64_t sb = x6.stride(0), sh = x6.stride(1), s0 = x6.stride(2), s1 = x6.stride(3), s2 = x6.stride(4);
  const int64_t sc = x6.stride(5);
  const int64_t head_out = L0 * L1 * C * padded;  // between heads of out
  at::parallel_for(0, x6.size(0) * L0 * L1, 4, [&](int64_t begin, int64_t end) {
    std::vector<T> tile_buffer(kBlock * H * C);
    T* tile = tile_buffer.data();
    for (int64_t r = begin; r < end; ++r) {
      const int64_t l1 = r % L1, l0 = (r / L1) % L0, b = r / (L1 * L0);
      const T* row = src + b * sb + l0 * s0 + l1 * s1;
      T* out_row = dst + b * H * head_out + (l0 * L1 + l1) * C * padded;
      for (int64_t g = 0; g < dilation; ++g) {
        const int64_t n = (L2 - g + dilation - 1) / dilation;
        for (int64_t p0 = 0; p0 < m; p0 += kBlock) {
          const int64_t len = std::min(kBlock, m - p0), valid = std::max<int64_t>(0, std::min(len, n - p0));
          for (int64_t p = 0; p < valid; ++p) {
            const T* key = row + (g + (p0 + p) * dilation) * s2;
            for (int64_t h = 0; h < H; ++h)
              for (int64_t c = 0; c < C; ++c) tile[(h * C + c) * kBlock + p] = key[h * sh + c * sc];
          }
          for (int64_t h = 0; h < H; ++h) {
            for (int64_t c = 0; c < C; ++c) {
              const T* t = tile + (h * C + c) * kBlock;
              T* d = out_row + h * head_out + c * padded + g * m + p0;
              for (int64_t p = 0; p < len; ++p) d[p] = p < valid ? t[p] : T(0);
            }
          }
        }
      }
      for (int64_t h = 0; h < H; ++h)
        for (int64_t c = 0; c < C; ++c) {
          T* d = out_row + h * head_out + c * padded;
          std::fill(d + inner, d + padded, T(0));
        }
    }
  });
}

// Packed strides of x6 when it can serve as a key-major operand as it is.
bool rows_layout(const at::Tensor& x6, int64_t dilation, PackedTensor& p) {
  const int64_t L0 = x6.size(2), L1 = x6.size(3), C = x6.size(5);
  if (dilation != 1 || C % kLanePad != 0 || x6.stride(5) != 1) return false;
  int64_t row;
  if (L1 == 1) {
    row = x6.stride(2);
  } else if (L0 == 1 || x6.stride(2) == L1 * x6.stride(3)) {
    row = x6.stride(3);
  } else {
    return false;
  }
  p = {x6, 0, x6.stride(0), x6.stride(1), row, x6.stride(4), 1};
  return true;
}

PackedTensor pack_rows(const at::Tensor& x6, int64_t dilation, at::ScalarType dtype) {
  const int64_t B = x6.size(0), H = x6.size(1), L0 = x6.size(2), L1 = x6.size(3), L2 = x6.size(4), C = x6.size(5);
  const Axis a = inner_axis(L2, dilation);
  const int64_t m = group_stride(a), inner = dilation * m, cp = pad_channels(C);
  auto out = at::empty({B, H, L0, L1, inner, cp}, x6.options().dtype(dtype));
  if (cp > C) out.narrow(5, C, cp - C).zero_();
  for (int64_t g = 0; g < dilation; ++g) {
    const int64_t n = group_length(a, g);
    out.narrow(4, g * m, n).narrow(5, 0, C).copy_(x6.slice(4, g, L2, dilation));
    if (n < m) out.narrow(4, g * m + n, m - n).zero_();
  }
  const int64_t head = L0 * L1 * inner * cp;
  return {out, 0, H * head, head, inner * cp, cp, 1};
}

// rows <- x6 (inverse of pack_rows).
void unpack_rows(const at::Tensor& rows, int64_t dilation, const at::Tensor& out6) {
  const int64_t L2 = out6.size(4), C = out6.size(5);
  const Axis a = inner_axis(L2, dilation);
  const int64_t m = group_stride(a);
  for (int64_t g = 0; g < dilation; ++g) {
    out6.slice(4, g, L2, dilation).copy_(rows.narrow(4, g * m, group_length(a, g)).narrow(5, 0, C));
  }
}

}  // namespace

at::Tensor token_view(const at::Tensor& x, const Geometry& g, bool heads_last) {
  const int64_t L0 = g.axis[0].length, L1 = g.axis[1].length, L2 = g.axis[2].length;
  const int64_t B = x.size(0), C = x.size(-1);
  if (heads_last) return x.view({B, L0, L1, L2, x.size(-2), C}).permute({0, 4, 1, 2, 3, 5});
  return x.view({B, x.size(1), L0, L1, L2, C});
}

at::Tensor additional_view(const at::Tensor& x) {
  return x.view({x.size(0), 1, 1, x.size(1), x.size(2), x.size(3)}).permute({0, 4, 1, 2, 3, 5});
}

PackedTensor pack_columns(const at::Tensor& x6, int64_t dilation, at::ScalarType dtype) {
  const int64_t B = x6.size(0), H = x6.size(1), L0 = x6.size(2), L1 = x6.size(3), L2 = x6.size(4), C = x6.size(5);
  const Axis a = inner_axis(L2, dilation);
  const int64_t m = group_stride(a);
  const int64_t padded = pad_columns(dilation * m, c10::elementSize(dtype));
  auto out = at::empty({B, H, L0, L1, C, padded}, x6.options().dtype(dtype));
  const auto x = x6.to(dtype);
  if (dtype == at::kDouble) {
    transpose_into_columns<double>(x, dilation, m, out);
  } else {
    transpose_into_columns<float>(x, dilation, m, out);
  }
  const int64_t head = L0 * L1 * C * padded;
  return {out, 0, H * head, head, C * padded, 1, padded};
}

PackedTensor rows_operand(const at::Tensor& x6, int64_t dilation, at::ScalarType dtype) {
  PackedTensor p;
  if (x6.scalar_type() == dtype && rows_layout(x6, dilation, p)) return p;
  return pack_rows(x6, dilation, dtype);
}

RowsGradient::RowsGradient(const at::Tensor& input, View view, int64_t dilation, int64_t splits, at::ScalarType acc)
    : view_(std::move(view)), dilation_(dilation) {
  result_ = at::empty(input.sizes(), input.options());
  const auto r6 = view_(result_);
  direct_ = splits == 1 && input.scalar_type() == acc && rows_layout(r6, dilation, packed_);
  if (direct_) {
    result_.zero_();
    return;
  }
  const int64_t B = r6.size(0), H = r6.size(1), L0 = r6.size(2), L1 = r6.size(3), L2 = r6.size(4);
  const int64_t inner = dilation * group_stride(inner_axis(L2, dilation)), cp = pad_channels(r6.size(5));
  const auto buffer = at::zeros({splits, B, H, L0, L1, inner, cp}, input.options().dtype(acc));
  const int64_t head = L0 * L1 * inner * cp;
  packed_ = {buffer, B * H * head, H * head, head, inner * cp, cp, 1};
}

at::Tensor RowsGradient::finish() {
  if (!direct_) unpack_rows(reduce_splits(packed_.data), dilation_, view_(result_));
  return result_;
}

}  // namespace natten::cpu
