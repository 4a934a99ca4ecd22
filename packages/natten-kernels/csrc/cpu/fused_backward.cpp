// Fused neighborhood attention backward (compiled once per ISA variant).
//
// A task owns one (split, batch, kv head): it recomputes P = exp(logits - lse) for its chunks of queries
// (with all query heads sharing the kv head), writes dq directly (each query belongs to exactly one task)
// and accumulates dk, dv, d(additional kv) and drpb into buffers private to the task. The host sums the
// task buffers in a fixed order, so results do not depend on thread timing.
#include "cpu/kernels.h"
#include "cpu/micro_kernels.h"

namespace natten::cpu::NATTEN_ISA {

template <typename T>
void fused_backward(const FusedBackwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const Geometry& g = sh.geometry;
  const ChunkPlanner<T> planner(sh, a.n_add, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> p_buf(items * sstride), ds_buf(items * sstride), q_buf(items * dp), do_buf(items * dvp),
      dq_buf(items * dp), qt_buf(items * sh.dim), dot_buf(items * sh.dim_v), delta_buf(items), lse_buf(items);
  T *P = p_buf.get(), *dS = ds_buf.get(), *Q = q_buf.get(), *dO = do_buf.get(), *dQ = dq_buf.get();
  T *Qt = qt_buf.get(), *dOt = dot_buf.get(), *delta = delta_buf.get(), *lse = lse_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    const auto [split, bkv, b, kvh, first, last] = split_task(task, sh.batch, sh.kv_heads, chunks, a.splits);
    const T* k_cols = slice_of(a.k_cols, 0, b, kvh);
    const T* k_rows = slice_of(a.k_rows, 0, b, kvh);
    const T* v_cols = slice_of(a.v_cols, 0, b, kvh);
    T* dk = slice_of(a.dk, split, b, kvh);
    T* dv = slice_of(a.dv, split, b, kvh);
    T* drpb = a.drpb.data ? a.drpb.data + task * a.drpb_task : nullptr;

    for (int64_t chunk = first; chunk < last; ++chunk) {
      const auto [c, nblocks, rows, inner, it, blocks] = planner.plan(chunk, a.rpb.row);
      if (chunk + 1 < last) {
        const Chunk next = chunk_at(g, chunk + 1, len);
        for (int64_t gi = 0; gi < groups; ++gi) {
          prefetch_tokens(a.q, b, kvh * groups + gi, next, sh.dim);
          prefetch_tokens(a.dout, b, kvh * groups + gi, next, sh.dim_v);
          prefetch_tokens(a.out, b, kvh * groups + gi, next, sh.dim_v);
        }
      }
      const int64_t n = c.size * groups;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t h = kvh * groups + it[i].head, j = it[i].query;
        load_channels(Q + i * dp, token_at(a.q, b, h, c, j), sh.dim, dp, a.scale);
        load_channels(dO + i * dvp, token_at(a.dout, b, h, c, j), sh.dim_v, dvp, T(1));
        // d lse / d logit = P, so grad_lse shifts delta = sum_j P_ij dP_ij = dout . out.
        const T* out = token_at(a.out, b, h, c, j);
        T d = T(0);
        for (int64_t ch = 0; ch < sh.dim_v; ++ch) d += dO[i * dvp + ch] * out[ch];
        delta[i] = a.dlse.data ? d - *token_at(a.dlse, b, h, c, j) : d;
        // A +inf logit leaves the row's softmax undefined: every P of the row is NaN (as the forward's out and
        // torch.softmax give), not just the one of the infinite logit that exp(s - lse) would make NaN.
        const T l = *token_at(a.lse, b, h, c, j);
        lse[i] = l == std::numeric_limits<T>::infinity() ? std::numeric_limits<T>::quiet_NaN() : l;
        for (int64_t ch = 0; ch < dp; ++ch) dQ[i * dp + ch] = T(0);
      }
      transpose_items(Q, dp, n, sh.dim, Qt, items);
      transpose_items(dO, dvp, n, sh.dim_v, dOt, items);

      // Logits (into P) and dP = dout . v (into dS).
      for (int64_t r = 0; r < c.rows; ++r) {
        const T* krow = k_cols + rows[r].row * a.k_cols.row;
        const T* vrow = v_cols + rows[r].row * a.v_cols.row;
        for (int64_t bl = 0; bl < nblocks; ++bl) {
          const Block& blk = blocks[bl];
          const int64_t at = blk.first * sstride + r * lanes;
          block_dots(Qt + blk.first, items, sh.dim, krow + blk.base, a.k_cols.channel, blk.size, lanes, P + at, sstride);
          block_dots(dOt + blk.first, items, sh.dim_v, vrow + blk.base, a.v_cols.channel, blk.size, lanes, dS + at,
                     sstride);
        }
      }
      if (a.n_add > 0) {
        block_dots(Qt, items, sh.dim, slice_of(a.k_add_cols, 0, b, kvh), a.k_add_cols.channel, n, add_lanes,
                   P + add_at, sstride);
        block_dots(dOt, items, sh.dim_v, slice_of(a.v_add_cols, 0, b, kvh), a.v_add_cols.channel, n, add_lanes,
                   dS + add_at, sstride);
      }

      // P = exp(logits - lse); dS = P * (dP - delta); both zero outside each item's keys.
      for (int64_t i = 0; i < n; ++i) {
        const int64_t gi = it[i].head, lo = it[i].lo, hi = it[i].hi;
        T* p = P + i * sstride;
        T* ds = dS + i * sstride;
        if (a.rpb.data) {
          add_bias(p, rows, c.rows, lanes, a.rpb.data + (kvh * groups + gi) * a.rpb.head + inner[it[i].query].bias - lo);
        }
        masked_exp(p, c.rows, lanes, lo, hi, lse[i]);
        softmax_grad(p, ds, c.rows, lanes, lo, hi, delta[i]);
        if (a.n_add > 0) {
          masked_exp(p + add_at, 1, add_lanes, 0, a.n_add, lse[i]);
          softmax_grad(p + add_at, ds + add_at, 1, add_lanes, 0, a.n_add, delta[i]);
        }
        if (drpb) {
          add_bias_grad(ds, rows, c.rows, lanes, lo, hi, drpb + gi * a.drpb.head + inner[it[i].query].bias - lo);
        }
      }

      // dq += dS k; dk += dS (scale q); dv += P dout. q is pre-scaled, so dk needs no further scaling.
      const int64_t kks = a.k_rows.key, dks = a.dk.key, dvs = a.dv.key;
      for (int64_t r = 0; r < c.rows; ++r) {
        const T* krow = k_rows + rows[r].row * a.k_rows.row;
        T* dkrow = dk + rows[r].row * a.dk.row;
        T* dvrow = dv + rows[r].row * a.dv.row;
        for (int64_t bl = 0; bl < nblocks; ++bl) {
          const Block& blk = blocks[bl];
          const T* ds = dS + blk.first * sstride + r * lanes;
          const T* p = P + blk.first * sstride + r * lanes;
          block_gather(ds, sstride, it + blk.first, blk.hi, krow + blk.base * kks, kks, dp, blk.size, dQ + blk.first * dp, dp);
          block_scatter(ds, sstride, it + blk.first, blk.hi, Q + blk.first * dp, dp, dp, blk.size, dkrow + blk.base * dks, dks);
          block_scatter(p, sstride, it + blk.first, blk.hi, dO + blk.first * dvp, dvp, dvp, blk.size, dvrow + blk.base * dvs, dvs);
        }
      }
      if (a.n_add > 0) {
        block_gather(dS + add_at, sstride, nullptr, a.n_add, slice_of(a.k_add_rows, 0, b, kvh), a.k_add_rows.key,
                     dp, n, dQ, dp);
        block_scatter(dS + add_at, sstride, nullptr, a.n_add, Q, dp, dp, n, slice_of(a.dk_add, split, b, kvh),
                      a.dk_add.key);
        block_scatter(P + add_at, sstride, nullptr, a.n_add, dO, dvp, dvp, n, slice_of(a.dv_add, split, b, kvh),
                      a.dv_add.key);
      }

      for (int64_t i = 0; i < n; ++i) {
        const int64_t h = kvh * groups + it[i].head, j = it[i].query;
        store_channels(token_at(a.dq, b, h, c, j), dQ + i * dp, sh.dim, a.scale);
      }
    }
  }
}

NATTEN_INSTANTIATE_KERNEL(fused_backward, FusedBackwardArgs)

}  // namespace natten::cpu::NATTEN_ISA
