// Vectorized building blocks shared by the CPU kernels. Included only by translation units compiled once
// per ISA variant (CMakeLists.txt defines NATTEN_ISA and CPU_CAPABILITY so that at::vec::Vectorized has
// that variant's width); everything here lives in the variant's namespace.
//
// Work is organized in chunks (neighborhood.h): the queries of a chunk share their key rows, so kernels
// walk the rows outermost and keep each packed key row in L1 while all queries of the chunk use it.
//
// Within a row, queries (with all their heads: "items") are sorted by the packed position of their first
// key and grouped into blocks whose windows all fit into `lanes` = round_up(k2 + kBlockSlack, W) keys from
// the block's base. Every item of a block then works on the same key vectors: logits are small GEMMs whose
// key vectors are loaded once per block instead of once per query, and the per-item scalars (logits,
// probabilities, their gradients) of row r live in lanes [r * lanes, r * lanes + lanes) of the item's buffer,
// lane u standing for packed key base + u. The item's own keys are lanes [lo, hi); every other lane is
// forced to zero in the per-item buffers, and weighted sums skip it (see "lane ranges" below).
#pragma once

#ifndef NATTEN_ISA
#error "micro_kernels.h is compiled once per ISA variant; see CMakeLists.txt"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu/kernel_args.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
using Vec = at::vec::Vectorized<T>;

inline int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

// Lanes of a per-item row buffer for windows of up to `keys` keys.
template <typename T>
inline int64_t row_lanes(int64_t keys) {
  return round_up(keys + kBlockSlack, Vec<T>::size());
}

// Query j of chunk c for (b, h).
template <typename T>
inline T* token_at(const Tokens<T>& t, int64_t b, int64_t h, const Chunk& c, int64_t j) {
  return t.data + b * t.b + h * t.h + c.i0 * t.s0 + c.i1 * t.s1 + (c.i2 + j) * t.s2;
}

// Asks for the channels of queries [0, size) of chunk c ahead of use: per-query reads of the inputs
// stride over the other heads and otherwise stall on memory.
template <typename T>
inline void prefetch_tokens(const Tokens<T>& t, int64_t b, int64_t h, const Chunk& c, int64_t channels) {
  if (t.data == nullptr) return;
  for (int64_t j = 0; j < c.size; ++j) {
    const char* p = reinterpret_cast<const char*>(token_at(t, b, h, c, j));
    for (int64_t off = 0; off < channels * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(p + off);
  }
}

// The (split, b, h) slice of a packed operand or accumulator.
template <typename T>
inline T* slice_of(const Packed<T>& p, int64_t split, int64_t b, int64_t h) {
  return p.data + split * p.split + b * p.batch + h * p.head;
}

// Per-thread scratch, zero-filled so that lanes that are computed on but never consumed stay finite.
// malloc rather than std containers: their inline members would be instantiated in every ISA variant under
// the same names.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(n, 1) * sizeof(T), 64));
    ptr_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (ptr_ == nullptr) std::abort();
    std::memset(static_cast<void*>(ptr_), 0, bytes);
  }
  ~Scratch() { std::free(ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return ptr_; }

 private:
  T* ptr_;
};

// Copies c real channels to dst, scaled, and zero-fills dst up to cp.
template <typename T>
inline void load_channels(T* dst, const T* src, int64_t c, int64_t cp, T scale) {
  for (int64_t i = 0; i < c; ++i) dst[i] = src[i] * scale;
  for (int64_t i = c; i < cp; ++i) dst[i] = T(0);
}

template <typename T>
inline void store_channels(T* dst, const T* src, int64_t c, T scale) {
  for (int64_t i = 0; i < c; ++i) dst[i] = src[i] * scale;
}

// xt[c * xs + i] = x[i * xstride + c] for c < channels, i < n.
template <typename T>
inline void transpose_items(const T* x, int64_t xstride, int64_t n, int64_t channels, T* xt, int64_t xs) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) xt[c * xs + i] = x[i * xstride + c];
}

// ---- items and blocks ----

struct Item {
  int64_t query;  // index in the chunk
  int64_t head;   // query head within the kv head's group
  int64_t lo;     // first lane of the item's keys (= its first key - block base)
  int64_t hi;     // one past its last lane
};

struct Block {
  int64_t first;  // first item
  int64_t size;   // items
  int64_t base;   // packed position of lane 0
  int64_t hi;     // max of the items' hi: lanes past it are zero weights for every item
};

// Items (queries x heads) of a chunk in key-position order, grouped into blocks; returns the block count.
// `order` is scratch for `queries` entries.
inline int64_t plan_blocks(const InnerKeys* inner, int64_t queries, int64_t groups, int64_t lanes, int64_t* order,
                           Item* items, Block* blocks) {
  for (int64_t j = 0; j < queries; ++j) {  // insertion sort: already sorted except across dilation groups
    int64_t i = j;
    for (; i > 0 && inner[order[i - 1]].pos > inner[j].pos; --i) order[i] = order[i - 1];
    order[i] = j;
  }
  int64_t nb = 0, n = 0;
  for (int64_t q = 0; q < queries; ++q) {
    const InnerKeys& in = inner[order[q]];
    if (nb == 0 || in.pos - blocks[nb - 1].base + in.count > lanes) blocks[nb++] = {n, 0, in.pos, 0};
    Block& blk = blocks[nb - 1];
    const int64_t hi = in.pos - blk.base + in.count;
    for (int64_t gi = 0; gi < groups; ++gi) items[n++] = {order[q], gi, in.pos - blk.base, hi};
    blk.size += groups;
    blk.hi = std::max(blk.hi, hi);
  }
  return nb;
}

// Sizes a kernel derives from its problem: padded head dims, key-row lanes, where the additional keys'
// lanes start in an item's buffer (after the rows) and how many there are, the buffer's stride, queries
// per chunk and the chunk count, query heads per kv head and items per chunk.
struct KernelSizes {
  int64_t dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items;
};

template <typename T>
inline KernelSizes kernel_sizes(const Shape& sh, int64_t n_add, int64_t query_block) {
  const Geometry& g = sh.geometry;
  const int64_t lanes = row_lanes<T>(g.axis[2].kernel), add_lanes = round_up(n_add, Vec<T>::size());
  const int64_t add_at = max_rows(g) * lanes, groups = sh.heads / sh.kv_heads;
  return {round_up(sh.dim, kLanePad), round_up(sh.dim_v, kLanePad), lanes, add_at, add_lanes, add_at + add_lanes,
          query_block, chunk_count(g, query_block), groups, query_block * groups};
}

// A chunk as plan_blocks left it: key rows, inner keys of its queries, items and blocks.
struct PlannedChunk {
  Chunk c;
  int64_t nblocks;
  const KeyRow* rows;
  const InnerKeys* inner;
  const Item* it;
  const Block* blocks;
};

// A kernel's sizes and its per-thread planning scratch; plan() lays out one chunk in that scratch (valid
// until the next call).
template <typename T>
class ChunkPlanner {
 public:
  ChunkPlanner(const Shape& sh, int64_t n_add, int64_t query_block)
      : sizes(kernel_sizes<T>(sh, n_add, query_block)),
        g_(sh.geometry),
        rows_(max_rows(g_)),
        inner_(sizes.len),
        items_(sizes.items),
        blocks_(sizes.len),
        order_(sizes.len) {}

  // Chunk `index`, bias offsets for rows of `bias_row` entries.
  PlannedChunk plan(int64_t index, int64_t bias_row) const {
    KeyRow* rows = rows_.get();
    InnerKeys* inner = inner_.get();
    Item* it = items_.get();
    Block* blocks = blocks_.get();
    const Chunk c = plan_chunk(g_, index, sizes.len, bias_row, rows, inner);
    const int64_t nblocks = plan_blocks(inner, c.size, sizes.groups, sizes.lanes, order_.get(), it, blocks);
    return {c, nblocks, rows, inner, it, blocks};
  }

  const KernelSizes sizes;

 private:
  const Geometry& g_;
  Scratch<KeyRow> rows_;
  Scratch<InnerKeys> inner_;
  Scratch<Item> items_;
  Scratch<Block> blocks_;
  Scratch<int64_t> order_;
};

// Backward task = (split, b, h) in that order (outermost first), h over `heads` (kv heads when fused);
// bh = b * heads + h. It covers chunks [first, last) of `chunks`.
struct SplitTask {
  int64_t split, bh, b, h, first, last;
};

inline SplitTask split_task(int64_t task, int64_t batch, int64_t heads, int64_t chunks, int64_t splits) {
  const int64_t bh = task % (batch * heads), split = task / (batch * heads);
  return {split, bh, bh / heads, bh % heads, split * chunks / splits, (split + 1) * chunks / splits};
}

// Lanes [lo, hi) of vector v.
template <typename T>
inline Vec<T> lane_mask(int64_t v, int64_t lo, int64_t hi) {
  using V = Vec<T>;
  const V lane = V::arange(T(v * V::size()), T(1));
  return (lane >= V(T(lo))) & (lane < V(T(hi)));
}

// Splits n items into runs of 8, 4, 2 and 1 for the register-blocked kernels below.
template <typename F>
inline void for_sub_blocks(int64_t n, F&& f) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) f(j, std::integral_constant<int, 8>());
  if (j + 4 <= n) {
    f(j, std::integral_constant<int, 4>());
    j += 4;
  }
  if (j + 2 <= n) {
    f(j, std::integral_constant<int, 2>());
    j += 2;
  }
  if (j < n) f(j, std::integral_constant<int, 1>());
}

// ---- logits: S[item][u] = sum_c x_item[c] * key(base + u)[c], keys in columns packing ----

template <typename T, int NB, int NV>
inline void dot_kernel(const T* xt, int64_t xs, int64_t channels, const T* keys, int64_t cs, T* s, int64_t ss) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  V acc[NB][NV];
  for (int j = 0; j < NB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = V(T(0));
  for (int64_t c = 0; c < channels; ++c) {
    V k[NV];
    for (int v = 0; v < NV; ++v) k[v] = V::loadu(keys + c * cs + v * W);
    const T* x = xt + c * xs;
    for (int j = 0; j < NB; ++j) {
      const V xj(x[j]);
      for (int v = 0; v < NV; ++v) acc[j][v] = at::vec::fmadd(xj, k[v], acc[j][v]);
    }
  }
  for (int j = 0; j < NB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v].store(s + j * ss + v * W);
}

// Items i < n of one block (transposed query-side vectors xt[c * xs + i], buffers s + i * ss), keys from
// `keys` = the block base in a columns-packed row.
template <typename T>
void block_dots(const T* xt, int64_t xs, int64_t channels, const T* keys, int64_t cs, int64_t n, int64_t lanes, T* s,
                int64_t ss) {
  constexpr int64_t W = Vec<T>::size();
  for (int64_t u = 0; u < lanes; u += 2 * W) {
    const bool two = lanes - u >= 2 * W;
    for_sub_blocks(n, [&](int64_t j, auto nb) {
      constexpr int NB = decltype(nb)::value;
      if (two) {
        dot_kernel<T, NB, 2>(xt + j, xs, channels, keys + u, cs, s + j * ss + u, ss);
      } else {
        dot_kernel<T, NB, 1>(xt + j, xs, channels, keys + u, cs, s + j * ss + u, ss);
      }
    });
  }
}

// ---- lane ranges: an item reads only its own keys ----
//
// Weighted sums below visit, for item j, only lanes [lo_j, hi_j): a lane outside an item's window is
// skipped, never multiplied by a zero weight, because 0 * inf and 0 * NaN are NaN and a non-finite key
// or value the item does not attend must not reach its result (nor a non-finite item the keys it does
// not attend). The lanes shared by every item of a sub-block run without per-item tests; the few lanes
// where the windows of a block differ (at most kBlockSlack at the start, fewer keys near a causal
// border at the end) test each item.

template <int NB>
struct LaneRanges {
  int64_t lo[NB], hi[NB];
  int64_t begin, common_lo, common_hi, end;  // union [begin, end), intersection [common_lo, common_hi)
};

// `items` null: every item uses lanes [0, lanes) (additional keys/values).
template <int NB>
inline LaneRanges<NB> lane_ranges(const Item* items, int64_t lanes) {
  LaneRanges<NB> r;
  r.begin = lanes;
  r.end = 0;
  r.common_lo = 0;
  r.common_hi = lanes;
  for (int j = 0; j < NB; ++j) {
    r.lo[j] = items ? items[j].lo : 0;
    r.hi[j] = items ? items[j].hi : lanes;
    r.begin = std::min(r.begin, r.lo[j]);
    r.end = std::max(r.end, r.hi[j]);
    r.common_lo = std::max(r.common_lo, r.lo[j]);
    r.common_hi = std::min(r.common_hi, r.hi[j]);
  }
  r.common_hi = std::max(r.common_hi, r.common_lo);  // empty intersection: everything is tested
  return r;
}

// Calls step(u, all) for u in the union of the ranges; `all` says every item of the sub-block has lane u.
template <int NB, typename F>
inline void for_lanes(const LaneRanges<NB>& r, F&& step) {
  for (int64_t u = r.begin; u < r.common_lo; ++u) step(u, false);
  for (int64_t u = r.common_lo; u < r.common_hi; ++u) step(u, true);
  for (int64_t u = r.common_hi; u < r.end; ++u) step(u, false);
}

// ---- out_item[0:cp) += sum over the item's lanes u of w_item[u] * key(base + u)[0:cp), keys in rows packing ----

template <typename T, int NB, int NV>
inline void gather_kernel(const T* w, int64_t ws, const LaneRanges<NB>& lr, const T* keys, int64_t ks, T* out,
                          int64_t os) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  V acc[NB][NV];
  for (int j = 0; j < NB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = V::loadu(out + j * os + v * W);
  for_lanes(lr, [&](int64_t u, bool all) {
    V k[NV];
    for (int v = 0; v < NV; ++v) k[v] = V::loadu(keys + u * ks + v * W);
    for (int j = 0; j < NB; ++j) {
      if (!all && (u < lr.lo[j] || u >= lr.hi[j])) continue;
      const V wj(w[j * ws + u]);
      for (int v = 0; v < NV; ++v) acc[j][v] = at::vec::fmadd(wj, k[v], acc[j][v]);
    }
  });
  for (int j = 0; j < NB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v].store(out + j * os + v * W);
}

// Items i < n of one block, item i reading lanes [items[i].lo, items[i].hi) (all of [0, lanes) when
// `items` is null), weights w + i * ws, outputs out + i * os.
template <typename T>
void block_gather(const T* w, int64_t ws, const Item* items, int64_t lanes, const T* keys, int64_t ks, int64_t cp,
                  int64_t n, T* out, int64_t os) {
  constexpr int64_t W = Vec<T>::size();
  for (int64_t c = 0; c < cp; c += 2 * W) {
    const bool two = cp - c >= 2 * W;
    for_sub_blocks(n, [&](int64_t j, auto nb) {
      constexpr int NB = decltype(nb)::value;
      const auto lr = lane_ranges<NB>(items ? items + j : nullptr, lanes);
      if (two) {
        gather_kernel<T, NB, 2>(w + j * ws, ws, lr, keys + c, ks, out + j * os + c, os);
      } else {
        gather_kernel<T, NB, 1>(w + j * ws, ws, lr, keys + c, ks, out + j * os + c, os);
      }
    });
  }
}

// O[i][0:dvp) += the weights of item i (S + i * sstride, row r at lanes r * lanes) times the chunk's rows of
// `values` (a slice of the rows-packed `v`), row by row so that each stays in L1 while all blocks use it.
template <typename T>
inline void gather_rows(const T* S, int64_t sstride, int64_t lanes, const KeyRow* rows, int64_t nrows, const Item* it,
                        const Block* blocks, int64_t nblocks, const T* values, const Packed<const T>& v, int64_t dvp,
                        T* O) {
  const int64_t ks = v.key;
  for (int64_t r = 0; r < nrows; ++r) {
    const T* vrow = values + rows[r].row * v.row;
    for (int64_t bl = 0; bl < nblocks; ++bl) {
      const Block& blk = blocks[bl];
      block_gather(S + blk.first * sstride + r * lanes, sstride, it + blk.first, blk.hi, vrow + blk.base * ks, ks, dvp,
                   blk.size, O + blk.first * dvp, dvp);
    }
  }
}

// ---- key(base + u)[0:cp) += sum over the items having lane u of w_item[u] * x_item[0:cp), accumulators in rows packing ----

template <typename T, int NB, int NV>
inline void scatter_kernel(const T* w, int64_t ws, const LaneRanges<NB>& lr, const T* x, int64_t xs, T* keys,
                           int64_t ks) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  V xv[NB][NV];
  for (int j = 0; j < NB; ++j)
    for (int v = 0; v < NV; ++v) xv[j][v] = V::loadu(x + j * xs + v * W);
  for_lanes(lr, [&](int64_t u, bool all) {
    T* k = keys + u * ks;
    V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = V::loadu(k + v * W);
    for (int j = 0; j < NB; ++j) {
      if (!all && (u < lr.lo[j] || u >= lr.hi[j])) continue;
      const V wj(w[j * ws + u]);
      for (int v = 0; v < NV; ++v) acc[v] = at::vec::fmadd(wj, xv[j][v], acc[v]);
    }
    for (int v = 0; v < NV; ++v) acc[v].store(k + v * W);
  });
}

template <typename T>
void block_scatter(const T* w, int64_t ws, const Item* items, int64_t lanes, const T* x, int64_t xs, int64_t cp,
                   int64_t n, T* keys, int64_t ks) {
  constexpr int64_t W = Vec<T>::size();
  for (int64_t c = 0; c < cp; c += 2 * W) {
    const bool two = cp - c >= 2 * W;
    for_sub_blocks(n, [&](int64_t j, auto nb) {
      constexpr int NB = decltype(nb)::value;
      const auto lr = lane_ranges<NB>(items ? items + j : nullptr, lanes);
      if (two) {
        scatter_kernel<T, NB, 2>(w + j * ws, ws, lr, x + j * xs + c, xs, keys + c, ks);
      } else {
        scatter_kernel<T, NB, 1>(w + j * ws, ws, lr, x + j * xs + c, xs, keys + c, ks);
      }
    });
  }
}

// ---- per-item softmax pieces over `rows` rows of `lanes` lanes, valid lanes [lo, hi) ----

// exp_u20 (~20 ulp, no libm call) is plenty for float accumulation; double keeps the accurate exp.
// exp_u20 clamps its argument, which turns NaN into a finite value and +inf into FLT_MAX-ish: both are
// put back (exp(NaN) = NaN, exp(inf) = inf), so that non-finite logits reach the results as in torch.
inline Vec<float> vexp(const Vec<float>& v) {
  const Vec<float> special = v.isnan() | (v == Vec<float>(std::numeric_limits<float>::infinity()));
  return Vec<float>::blendv(v.exp_u20(), v, special);
}
inline Vec<double> vexp(const Vec<double>& v) {
  return v.exp();
}

template <typename T>
inline T horizontal_max(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vec<T>& a, const Vec<T>& b) { return at::vec::maximum(a, b); }, v);
}

template <typename T>
inline T horizontal_sum(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vec<T>& a, const Vec<T>& b) { return a + b; }, v);
}

// max(m, every valid entry).
template <typename T>
T masked_max(const T* S, int64_t rows, int64_t lanes, int64_t lo, int64_t hi, T m) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V ninf(-std::numeric_limits<T>::infinity());
  V mv(m);
  for (int64_t u = 0; u < lanes; u += W) {
    const V mask = lane_mask<T>(u / W, lo, hi);
    for (int64_t r = 0; r < rows; ++r) mv = at::vec::maximum(mv, V::blendv(ninf, V::loadu(S + r * lanes + u), mask));
  }
  return horizontal_max(mv);
}

// S <- exp(S - m) on valid entries and 0 elsewhere; returns the sum.
template <typename T>
T masked_exp(T* S, int64_t rows, int64_t lanes, int64_t lo, int64_t hi, T m) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V mv(m), zero(T(0));
  V sum(T(0));
  for (int64_t u = 0; u < lanes; u += W) {
    const V mask = lane_mask<T>(u / W, lo, hi);
    for (int64_t r = 0; r < rows; ++r) {
      const V e = V::blendv(zero, vexp(V::loadu(S + r * lanes + u) - mv), mask);
      e.store(S + r * lanes + u);
      sum = sum + e;
    }
  }
  return horizontal_sum(sum);
}

// dS <- P * (dS - delta) on valid entries and 0 elsewhere.
template <typename T>
void softmax_grad(const T* P, T* dS, int64_t rows, int64_t lanes, int64_t lo, int64_t hi, T delta) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V vdelta(delta), zero(T(0));
  for (int64_t u = 0; u < lanes; u += W) {
    const V mask = lane_mask<T>(u / W, lo, hi);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t e = r * lanes + u;
      V::blendv(zero, V::loadu(P + e) * (V::loadu(dS + e) - vdelta), mask).store(dS + e);
    }
  }
}

// S[r][u] += bias[rows[r].bias + u]; `bias` is the item's bias for lane 0 (bias rows carry margins).
template <typename T>
void add_bias(T* S, const KeyRow* rows, int64_t nrows, int64_t lanes, const T* bias) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  for (int64_t r = 0; r < nrows; ++r) {
    T* s = S + r * lanes;
    const T* b = bias + rows[r].bias;
    for (int64_t u = 0; u < lanes; u += W) (V::loadu(s + u) + V::loadu(b + u)).store(s + u);
  }
}

// dbias[rows[r].bias + u] += dS[r][u] for valid lanes (the others add zero).
template <typename T>
void add_bias_grad(const T* dS, const KeyRow* rows, int64_t nrows, int64_t lanes, int64_t lo, int64_t hi, T* dbias) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V zero(T(0));
  for (int64_t u = 0; u < lanes; u += W) {
    const V mask = lane_mask<T>(u / W, lo, hi);
    for (int64_t r = 0; r < nrows; ++r) {
      T* b = dbias + rows[r].bias + u;
      (V::loadu(b) + V::blendv(zero, V::loadu(dS + r * lanes + u), mask)).store(b);
    }
  }
}

// An unfused attention tensor [B * H, tokens, K]; a row holds one query's K slots in kernel order.
template <typename T>
struct AttnRows {
  AttnRows(T* data, const Geometry& g) : data(data), tokens(token_count(g)), slots(kernel_volume(g)) {}
  // The row of query j of chunk c, bh = b * H + h.
  T* row(int64_t bh, const Chunk& c, int64_t j) const { return data + (bh * tokens + c.first + j) * slots; }

  T* data;
  int64_t tokens, slots;
};

// Unfused attention rows (kernel-slot order; lane lo + t is slot rows[r].slot + t) <-> item buffers.
template <typename T>
void gather_slots(const T* slots, const KeyRow* rows, int64_t nrows, int64_t lanes, int64_t lo, int64_t hi, T* S) {
  for (int64_t r = 0; r < nrows; ++r) {
    T* s = S + r * lanes;
    for (int64_t u = 0; u < lo; ++u) s[u] = T(0);
    std::memcpy(s + lo, slots + rows[r].slot, (hi - lo) * sizeof(T));
    for (int64_t u = hi; u < lanes; ++u) s[u] = T(0);
  }
}

template <typename T>
void scatter_slots(const T* S, const KeyRow* rows, int64_t nrows, int64_t lanes, int64_t lo, int64_t hi, T fill,
                   int64_t nslots, T* slots) {
  for (int64_t i = 0; i < nslots; ++i) slots[i] = fill;
  for (int64_t r = 0; r < nrows; ++r) std::memcpy(slots + rows[r].slot, S + r * lanes + lo, (hi - lo) * sizeof(T));
}

}  // namespace natten::cpu::NATTEN_ISA
