// Fused neighborhood attention forward (compiled once per ISA variant).
//
// Per chunk of queries (with all query heads of one kv head): logits into small per-item buffers, an exact
// two-pass softmax per item, then the weighted sum of values; see micro_kernels.h for the blocking.
// Memory per thread is O(chunk * kernel volume), never O(tokens * kernel volume).
#include "cpu/kernels.h"
#include "cpu/micro_kernels.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
void fused_forward(const FusedForwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const Geometry& g = sh.geometry;
  const ChunkPlanner<T> planner(sh, a.n_add, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> s_buf(items * sstride), q_buf(items * dp), qt_buf(items * sh.dim), o_buf(items * dvp), m_buf(items),
      l_buf(items);
  T *S = s_buf.get(), *Q = q_buf.get(), *Qt = qt_buf.get(), *O = o_buf.get(), *M = m_buf.get(), *L = l_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    // Task = (b, chunk, kv head): consecutive tasks read the other heads of the same tokens.
    const int64_t kvh = task % sh.kv_heads, b = task / (sh.kv_heads * chunks);
    const auto [c, nblocks, rows, inner, it, blocks] = planner.plan((task / sh.kv_heads) % chunks, a.rpb.row);
    if (task + 1 < end) {
      const int64_t next_kvh = (task + 1) % sh.kv_heads, next_b = (task + 1) / (sh.kv_heads * chunks);
      const Chunk next = chunk_at(g, ((task + 1) / sh.kv_heads) % chunks, len);
      for (int64_t gi = 0; gi < groups; ++gi) prefetch_tokens(a.q, next_b, next_kvh * groups + gi, next, sh.dim);
    }
    const int64_t n = c.size * groups;
    // Plain copies first (independent wide loads keep many cache misses in flight), then the transpose
    // in L1.
    for (int64_t i = 0; i < n; ++i) {
      load_channels(Q + i * dp, token_at(a.q, b, kvh * groups + it[i].head, c, it[i].query), sh.dim, dp, a.scale);
    }
    transpose_items(Q, dp, n, sh.dim, Qt, items);

    const T* keys = slice_of(a.k_cols, 0, b, kvh);
    for (int64_t r = 0; r < c.rows; ++r) {  // row by row, each kept in L1 while all blocks use it
      const T* krow = keys + rows[r].row * a.k_cols.row;
      for (int64_t bl = 0; bl < nblocks; ++bl) {
        const Block& blk = blocks[bl];
        block_dots(Qt + blk.first, items, sh.dim, krow + blk.base, a.k_cols.channel, blk.size, lanes,
                   S + blk.first * sstride + r * lanes, sstride);
      }
    }
    if (a.n_add > 0) {
      block_dots(Qt, items, sh.dim, slice_of(a.k_add_cols, 0, b, kvh), a.k_add_cols.channel, n, add_lanes,
                 S + add_at, sstride);
    }

    for (int64_t i = 0; i < n; ++i) {
      T* s = S + i * sstride;
      const InnerKeys& in = inner[it[i].query];
      if (a.rpb.data) {
        add_bias(s, rows, c.rows, lanes, a.rpb.data + (kvh * groups + it[i].head) * a.rpb.head + in.bias - it[i].lo);
      }
      T m = masked_max(s, c.rows, lanes, it[i].lo, it[i].hi, -std::numeric_limits<T>::infinity());
      if (a.n_add > 0) m = masked_max(s + add_at, 1, add_lanes, 0, a.n_add, m);
      T sum = masked_exp(s, c.rows, lanes, it[i].lo, it[i].hi, m);
      if (a.n_add > 0) sum += masked_exp(s + add_at, 1, add_lanes, 0, a.n_add, m);
      M[i] = m;
      L[i] = sum;
      for (int64_t ch = 0; ch < dvp; ++ch) O[i * dvp + ch] = T(0);
    }

    gather_rows(S, sstride, lanes, rows, c.rows, it, blocks, nblocks, slice_of(a.v_rows, 0, b, kvh), a.v_rows, dvp, O);
    if (a.n_add > 0) {
      block_gather(S + add_at, sstride, nullptr, a.n_add, slice_of(a.v_add_rows, 0, b, kvh), a.v_add_rows.key, dvp,
                   n, O, dvp);
    }

    for (int64_t i = 0; i < n; ++i) {
      const int64_t h = kvh * groups + it[i].head, j = it[i].query;
      store_channels(token_at(a.out, b, h, c, j), O + i * dvp, sh.dim_v, T(1) / L[i]);
      // As torch.logsumexp: an infinite max is the result (+inf: some logit is +inf; -inf: all are).
      *token_at(a.lse, b, h, c, j) = std::isinf(M[i]) ? M[i] : M[i] + std::log(L[i]);
    }
  }
}

NATTEN_INSTANTIATE_KERNEL(fused_forward, FusedForwardArgs)

}  // namespace natten::cpu::NATTEN_ISA
