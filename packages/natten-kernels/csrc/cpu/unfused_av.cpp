// Unfused AV: attention-weighted sum of values, and its gradient (compiled once per ISA variant). Same
// chunk/block structure as the fused kernels (micro_kernels.h), one head per kv head.
#include "cpu/kernels.h"
#include "cpu/micro_kernels.h"

namespace natten::cpu::NATTEN_ISA {

// Task = (b, h, chunk).
template <typename T>
void av_forward(const AVForwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const AttnRows<const T> attn(a.attn, sh.geometry);
  const ChunkPlanner<T> planner(sh, 0, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> s_buf(len * sstride), o_buf(len * dvp);
  T *S = s_buf.get(), *O = o_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    const int64_t bh = task / chunks, h = bh % sh.heads, b = bh / sh.heads;
    const auto [c, nblocks, rows, inner, it, blocks] = planner.plan(task % chunks, 0);
    for (int64_t i = 0; i < c.size; ++i) {
      gather_slots(attn.row(bh, c, it[i].query), rows, c.rows, lanes, it[i].lo, it[i].hi, S + i * sstride);
      for (int64_t ch = 0; ch < dvp; ++ch) O[i * dvp + ch] = T(0);
    }
    gather_rows(S, sstride, lanes, rows, c.rows, it, blocks, nblocks, slice_of(a.v_rows, 0, b, h), a.v_rows, dvp, O);
    for (int64_t i = 0; i < c.size; ++i) {
      store_channels(token_at(a.out, b, h, c, it[i].query), O + i * dvp, sh.dim_v, T(1));
    }
  }
}

// Task = (split, b, h): dattn per query, dv into the task's accumulator.
template <typename T>
void av_backward(const AVBackwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const AttnRows<const T> attn(a.attn, sh.geometry);
  const AttnRows<T> dattn(a.dattn, sh.geometry);
  const ChunkPlanner<T> planner(sh, 0, a.query_block);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] = planner.sizes;
  Scratch<T> s_buf(len * sstride), a_buf(len * sstride), do_buf(len * dvp), dot_buf(len * sh.dim_v);
  T *S = s_buf.get(), *A = a_buf.get(), *dO = do_buf.get(), *dOt = dot_buf.get();

  for (int64_t task = begin; task < end; ++task) {
    const auto [split, bh, b, h, first, last] = split_task(task, sh.batch, sh.heads, chunks, a.splits);
    const T* values = slice_of(a.v_cols, 0, b, h);
    T* dv = slice_of(a.dv, split, b, h);
    const int64_t dvs = a.dv.key;
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const auto [c, nblocks, rows, inner, it, blocks] = planner.plan(chunk, 0);
      for (int64_t i = 0; i < c.size; ++i) {
        const int64_t j = it[i].query;
        load_channels(dO + i * dvp, token_at(a.dout, b, h, c, j), sh.dim_v, dvp, T(1));
        gather_slots(attn.row(bh, c, j), rows, c.rows, lanes, it[i].lo, it[i].hi, A + i * sstride);
      }
      transpose_items(dO, dvp, c.size, sh.dim_v, dOt, len);
      for (int64_t r = 0; r < c.rows; ++r) {
        const T* vrow = values + rows[r].row * a.v_cols.row;
        T* dvrow = dv + rows[r].row * a.dv.row;
        for (int64_t bl = 0; bl < nblocks; ++bl) {
          const Block& blk = blocks[bl];
          block_dots(dOt + blk.first, len, sh.dim_v, vrow + blk.base, a.v_cols.channel, blk.size, lanes,
                     S + blk.first * sstride + r * lanes, sstride);
          block_scatter(A + blk.first * sstride + r * lanes, sstride, it + blk.first, blk.hi, dO + blk.first * dvp, dvp, dvp, blk.size,
                        dvrow + blk.base * dvs, dvs);
        }
      }
      for (int64_t i = 0; i < c.size; ++i) {
        scatter_slots(S + i * sstride, rows, c.rows, lanes, it[i].lo, it[i].hi, T(0), dattn.slots,
                      dattn.row(bh, c, it[i].query));
      }
    }
  }
}

NATTEN_INSTANTIATE_KERNEL(av_forward, AVForwardArgs)
NATTEN_INSTANTIATE_KERNEL(av_backward, AVBackwardArgs)

}  // namespace natten::cpu::NATTEN_ISA
