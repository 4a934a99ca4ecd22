// Unfused AV: attention-weighted sum of values, and its gradient (compiled once per ISA variant). Same
// chunk/block structure as the fused kernels (micro_kernels.h), one head per kv head.
#include "cpu/kernels.h"
#include "cpu/micro_kernels.h"

namespace natten::cpu::NATTEN_ISA {

// Task = (b, h, chunk).
template <typename T>
void av_forward(const AVForwardArgs<T>& a, int64_t begin, int64_t end) {
  const Shape& sh = a.shape;
  const Geometry& g = sh.geometry;
  const int64_t slots = kernel_volume(g), tokens = token_count(g);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] =
      kernel_sizes<T>(sh, 0, a.query_block);

  Scratch<T> s_buf(len * sstride), o_buf(len * dvp);
  T *S = s_buf.get(), *O = o_buf.get();
  PlanScratch plan(g, len, items);
  const auto [rows, inner, it, blocks, order] = plan.get();

  for (int64_t task = begin; task < end; ++task) {
    const int64_t bh = task / chunks, h = bh % sh.heads, b = bh / sh.heads;
    const Chunk c = plan_chunk(g, task % chunks, len, 0, rows, inner);
    const int64_t nblocks = plan_blocks(inner, c.size, 1, lanes, order, it, blocks);
    for (int64_t i = 0; i < c.size; ++i) {
      gather_slots(a.attn + (bh * tokens + c.first + it[i].query) * slots, rows, c.rows, lanes, it[i].lo, it[i].hi,
                   S + i * sstride);
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
  const Geometry& g = sh.geometry;
  const int64_t slots = kernel_volume(g), tokens = token_count(g);
  const auto [dp, dvp, lanes, add_at, add_lanes, sstride, len, chunks, groups, items] =
      kernel_sizes<T>(sh, 0, a.query_block);

  Scratch<T> s_buf(len * sstride), a_buf(len * sstride), do_buf(len * dvp), dot_buf(len * sh.dim_v);
  T *S = s_buf.get(), *A = a_buf.get(), *dO = do_buf.get(), *dOt = dot_buf.get();
  PlanScratch plan(g, len, items);
  const auto [rows, inner, it, blocks, order] = plan.get();

  for (int64_t task = begin; task < end; ++task) {
    const int64_t bh = task % (sh.batch * sh.heads), split = task / (sh.batch * sh.heads);
    const int64_t h = bh % sh.heads, b = bh / sh.heads;
    const T* values = slice_of(a.v_cols, 0, b, h);
    T* dv = slice_of(a.dv, split, b, h);
    const int64_t dvs = a.dv.key;
    for (int64_t chunk = split * chunks / a.splits; chunk < (split + 1) * chunks / a.splits; ++chunk) {
      const Chunk c = plan_chunk(g, chunk, len, 0, rows, inner);
      const int64_t nblocks = plan_blocks(inner, c.size, 1, lanes, order, it, blocks);
      for (int64_t i = 0; i < c.size; ++i) {
        const int64_t j = it[i].query;
        load_channels(dO + i * dvp, token_at(a.dout, b, h, c, j), sh.dim_v, dvp, T(1));
        gather_slots(a.attn + (bh * tokens + c.first + j) * slots, rows, c.rows, lanes, it[i].lo, it[i].hi, A + i * sstride);
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
        scatter_slots(S + i * sstride, rows, c.rows, lanes, it[i].lo, it[i].hi, T(0), slots,
                      a.dattn + (bh * tokens + c.first + it[i].query) * slots);
      }
    }
  }
}

template void av_forward<float>(const AVForwardArgs<float>&, int64_t, int64_t);
template void av_backward<float>(const AVBackwardArgs<float>&, int64_t, int64_t);
template void av_forward<double>(const AVForwardArgs<double>&, int64_t, int64_t);
template void av_backward<double>(const AVBackwardArgs<double>&, int64_t, int64_t);

}  // namespace natten::cpu::NATTEN_ISA
