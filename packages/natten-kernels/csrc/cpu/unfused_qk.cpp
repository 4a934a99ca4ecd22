// Unfused QK: attention logits without softmax, and their gradient (compiled once per ISA variant). Same
// chunk/block structure as the fused kernels (micro_kernels.h), one head per kv head.
#include "cpu/kernels.h"
#include "cpu/micro_kernels.h"

namespace natten::cpu::NATTEN_ISA {

// Task = (b, h, chunk).
template <typename T>
void qk_forward(const QKForwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const AttnRows<T> attn(a.attn, sh.geometry);
  const ChunkPlanner<T> planner(sh, 0, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> s_buf(len * sstride), qt_buf(len * sh.dim);
  T *S = s_buf.get(), *Qt = qt_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    const int64_t bh = task / chunks, h = bh % sh.heads, b = bh / sh.heads;
    const auto [c, nblocks, rows, inner, it, blocks] = planner.plan(task % chunks, a.rpb.row);
    for (int64_t i = 0; i < c.size; ++i) {
      transpose_items(token_at(a.q, b, h, c, it[i].query), 0, 1, sh.dim, Qt + i, len);
    }
    const T* keys = slice_of(a.k_cols, 0, b, h);
    for (int64_t r = 0; r < c.rows; ++r) {
      const T* krow = keys + rows[r].row * a.k_cols.row;
      for (int64_t bl = 0; bl < nblocks; ++bl) {
        const Block& blk = blocks[bl];
        block_dots(Qt + blk.first, len, sh.dim, krow + blk.base, a.k_cols.channel, blk.size, lanes,
                   S + blk.first * sstride + r * lanes, sstride);
      }
    }
    for (int64_t i = 0; i < c.size; ++i) {
      T* s = S + i * sstride;
      const InnerKeys& in = inner[it[i].query];
      if (a.rpb.data) add_bias(s, rows, c.rows, lanes, a.rpb.data + h * a.rpb.head + in.bias - it[i].lo);
      scatter_slots(s, rows, c.rows, lanes, it[i].lo, it[i].hi, -std::numeric_limits<T>::infinity(), attn.slots,
                    attn.row(bh, c, it[i].query));
    }
  }
}

// Task = (split, b, h): dq per query, dk and drpb into the task's accumulators.
template <typename T>
void qk_backward(const QKBackwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const AttnRows<const T> dattn(a.dattn, sh.geometry);
  const ChunkPlanner<T> planner(sh, 0, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> s_buf(len * sstride), q_buf(len * dp), dq_buf(len * dp);
  T *S = s_buf.get(), *Q = q_buf.get(), *dQ = dq_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    const auto [split, bh, b, h, first, last] = split_task(task, sh.batch, sh.heads, chunks, a.splits);
    const T* keys = slice_of(a.k_rows, 0, b, h);
    T* dk = slice_of(a.dk, split, b, h);
    T* drpb = a.drpb.data ? a.drpb.data + task * a.drpb.head : nullptr;
    const int64_t ks = a.k_rows.key, dks = a.dk.key;
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const auto [c, nblocks, rows, inner, it, blocks] = planner.plan(chunk, a.drpb.row);
      for (int64_t i = 0; i < c.size; ++i) {
        const int64_t j = it[i].query;
        gather_slots(dattn.row(bh, c, j), rows, c.rows, lanes, it[i].lo, it[i].hi, S + i * sstride);
        load_channels(Q + i * dp, token_at(a.q, b, h, c, j), sh.dim, dp, T(1));
        for (int64_t ch = 0; ch < dp; ++ch) dQ[i * dp + ch] = T(0);
        if (drpb) {
          add_bias_grad(S + i * sstride, rows, c.rows, lanes, it[i].lo, it[i].hi,
                        drpb + inner[it[i].query].bias - it[i].lo);
        }
      }
      for (int64_t r = 0; r < c.rows; ++r) {
        const T* krow = keys + rows[r].row * a.k_rows.row;
        T* dkrow = dk + rows[r].row * a.dk.row;
        for (int64_t bl = 0; bl < nblocks; ++bl) {
          const Block& blk = blocks[bl];
          const T* w = S + blk.first * sstride + r * lanes;
          block_gather(w, sstride, it + blk.first, blk.hi, krow + blk.base * ks, ks, dp, blk.size, dQ + blk.first * dp, dp);
          block_scatter(w, sstride, it + blk.first, blk.hi, Q + blk.first * dp, dp, dp, blk.size, dkrow + blk.base * dks, dks);
        }
      }
      for (int64_t i = 0; i < c.size; ++i) {
        store_channels(token_at(a.dq, b, h, c, it[i].query), dQ + i * dp, sh.dim, T(1));
      }
    }
  }
}

NATTEN_INSTANTIATE_KERNEL(qk_forward, QKForwardArgs)
NATTEN_INSTANTIATE_KERNEL(qk_backward, QKBackwardArgs)

}  // namespace natten::cpu::NATTEN_ISA
