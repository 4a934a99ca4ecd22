// Neighborhood window math: the single implementation of docs/semantics.md used by every
// CPU kernel. Everything works on the internal rank-3 problem (see make_geometry).
#pragma once

#include <algorithm>
#include <cstdint>

#include "natten/isa_namespace.h"

namespace natten {

constexpr int kRank = 3;

// One spatial axis. Plain data: member functions would be inline symbols shared by translation units
// compiled for different ISAs (see isa_namespace.h).
struct Axis {
  int64_t length = 1;
  int64_t kernel = 1;
  int64_t dilation = 1;
  int64_t stride = 1;
  bool causal = false;
};

struct Geometry {
  Axis axis[kRank];
};

// The keys of one query along one axis, in dilation-group-local coordinates: the query is `local` in
// group `group`; kernel slots 0..count-1 are valid and slot t is group-local key `start + t`.
struct AxisWindow {
  int64_t group;
  int64_t local;
  int64_t start;
  int64_t count;
};

// The neighborhood of a query splits into key rows (axes 0 and 1), shared by every query of a line (fixed
// i0, i1), and a window along the innermost axis, whose keys are contiguous in packed storage (packing
// de-interleaves that axis by dilation group). Slot t of row r is kernel slot `row.slot + t`, packed
// position `inner.pos + t` and bias entry `row.bias + inner.bias + t`.
struct KeyRow {
  int64_t row;   // key0 * L1 + key1
  int64_t slot;  // row-major kernel slot of the row's first key
  int64_t bias;  // offset in a [2k0-1][2k1-1][bias_row] table
};

struct InnerKeys {
  int64_t pos;    // packed position of the first key: group * group_stride + start
  int64_t count;  // valid slots
  int64_t bias;   // bias index of the first key on the innermost axis
};

// Up to `len` consecutive queries of one line (fixed i0, i1): the unit of work of the CPU kernels.
struct Chunk {
  int64_t first;       // flattened index (over L0, L1, L2) of the first query
  int64_t i0, i1, i2;  // coordinates of the first query
  int64_t size;        // queries
  int64_t rows;        // key rows shared by the chunk's queries
};

inline namespace NATTEN_ISA_NAMESPACE {

// Length of dilation group g: ceil((L - g) / d).
inline int64_t group_length(const Axis& a, int64_t g) {
  return (a.length - g + a.dilation - 1) / a.dilation;
}

// Packed storage gives every dilation group the length of group 0 (the longest) so a group's keys
// start at group * group_stride.
inline int64_t group_stride(const Axis& a) {
  return group_length(a, 0);
}

inline AxisWindow axis_window(const Axis& a, int64_t i) {
  const int64_t k = a.kernel, s = a.stride;
  AxisWindow w;
  w.group = i % a.dilation;
  w.local = i / a.dilation;
  const int64_t n = group_length(a, w.group);
  const int64_t block = (w.local / s) * s;
  if (a.causal) {
    const int64_t leader = std::min(block + s - 1, n - 1);
    w.start = std::max<int64_t>(leader - k + 1, 0);
    w.count = std::min(k, w.local - w.start + 1);
  } else {
    const int64_t leader = std::min(block + s / 2, n - 1);
    w.start = std::min(std::max<int64_t>(leader - k / 2, 0), n - k);
    w.count = k;
  }
  return w;
}

// Global index of the key in slot t.
inline int64_t window_key(const Axis& a, const AxisWindow& w, int64_t t) {
  return w.group + (w.start + t) * a.dilation;
}

// Index of slot t in this axis' rpb extent of 2k-1: (k - 1) + (key - query) / d.
inline int64_t window_bias(const Axis& a, const AxisWindow& w, int64_t t) {
  return a.kernel - 1 + w.start + t - w.local;
}

inline int64_t token_count(const Geometry& g) {
  return g.axis[0].length * g.axis[1].length * g.axis[2].length;
}

inline int64_t kernel_volume(const Geometry& g) {
  return g.axis[0].kernel * g.axis[1].kernel * g.axis[2].kernel;
}

// Upper bound of line_rows() results.
inline int64_t max_rows(const Geometry& g) {
  return g.axis[0].kernel * g.axis[1].kernel;
}

// Fills `rows` (max_rows(g) entries) with the key rows of queries (i0, i1, *); returns how many. Bias
// offsets index a [2k0-1][2k1-1][bias_row] table.
inline int64_t line_rows(const Geometry& g, int64_t i0, int64_t i1, int64_t bias_row, KeyRow* rows) {
  const Axis &a0 = g.axis[0], &a1 = g.axis[1];
  const AxisWindow w0 = axis_window(a0, i0), w1 = axis_window(a1, i1);
  const int64_t extent1 = 2 * a1.kernel - 1;
  int64_t n = 0;
  for (int64_t t0 = 0; t0 < w0.count; ++t0) {
    const int64_t key0 = window_key(a0, w0, t0);
    const int64_t bias0 = window_bias(a0, w0, t0);
    for (int64_t t1 = 0; t1 < w1.count; ++t1) {
      KeyRow& r = rows[n++];
      r.row = key0 * a1.length + window_key(a1, w1, t1);
      r.slot = (t0 * a1.kernel + t1) * g.axis[2].kernel;
      r.bias = (bias0 * extent1 + window_bias(a1, w1, t1)) * bias_row;
    }
  }
  return n;
}

inline InnerKeys inner_keys(const Geometry& g, int64_t i2) {
  const Axis& a = g.axis[2];
  const AxisWindow w = axis_window(a, i2);
  return {w.group * group_stride(a) + w.start, w.count, window_bias(a, w, 0)};
}

inline int64_t chunk_count(const Geometry& g, int64_t len) {
  return g.axis[0].length * g.axis[1].length * ((g.axis[2].length + len - 1) / len);
}

// Chunk `index` without its neighborhood (rows = 0).
inline Chunk chunk_at(const Geometry& g, int64_t index, int64_t len) {
  const int64_t L1 = g.axis[1].length, L2 = g.axis[2].length;
  const int64_t per_line = (L2 + len - 1) / len;
  const int64_t line = index / per_line, i2 = (index % per_line) * len;
  return {line * L2 + i2, line / L1, line % L1, i2, std::min(len, L2 - i2), 0};
}

// Chunk `index`; fills rows (max_rows(g) entries) and inner (len entries).
inline Chunk plan_chunk(const Geometry& g, int64_t index, int64_t len, int64_t bias_row, KeyRow* rows,
                        InnerKeys* inner) {
  Chunk c = chunk_at(g, index, len);
  c.rows = line_rows(g, c.i0, c.i1, bias_row, rows);
  for (int64_t j = 0; j < c.size; ++j) inner[j] = inner_keys(g, c.i2 + j);
  return c;
}

// Views a rank-`rank` problem (1..3) as rank 3 by prepending unit axes with kernel 1 (docs/internals.md,
// "Internal rank").
inline Geometry make_geometry(int64_t rank, const int64_t* shape, const int64_t* kernel,
                              const int64_t* dilation, const int64_t* stride, const bool* causal) {
  Geometry g;
  const int64_t offset = kRank - rank;
  for (int64_t i = 0; i < rank; ++i) {
    Axis& a = g.axis[offset + i];
    a.length = shape[i];
    a.kernel = kernel[i];
    a.dilation = dilation[i];
    a.stride = stride[i];
    a.causal = causal[i];
  }
  return g;
}

}  // namespace NATTEN_ISA_NAMESPACE
}  // namespace natten
