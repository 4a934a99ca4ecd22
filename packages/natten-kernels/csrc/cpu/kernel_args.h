// The interface between the host side (tensors, packing, threading; baseline ISA) and the compute kernels
// (compiled once per ISA). Raw pointers and strides only, and plain data: see isa_namespace.h.
#pragma once

#include <cstdint>

#include "natten/neighborhood.h"

namespace natten::cpu {

// Channels are padded to a multiple of this many elements, so that every ISA variant (at most 16 lanes)
// reads and writes whole vectors.
constexpr int64_t kLanePad = 16;

// Queries whose windows start within kBlockSlack keys of each other share key vectors (micro_kernels.h);
// a query's per-row buffer then spans round_up(k2 + kBlockSlack, lanes) keys from its block's base.
constexpr int64_t kBlockSlack = 3;

// Dot products read up to kKeyPad keys past the end of a columns-packed row (and of the additional keys);
// packing provides them, zeroed. Rows-layout operands are only touched at keys of some query's window.
constexpr int64_t kKeyPad = 2 * kLanePad;

inline namespace NATTEN_ISA_NAMESPACE {

// Bias rows carry this margin on both sides of their 2k2-1 entries: a query's bias is read over its whole
// row buffer, which may start before and end after its own window.
inline int64_t bias_margin(int64_t k2) {
  return k2 + kBlockSlack + kLanePad;
}

}  // namespace NATTEN_ISA_NAMESPACE

// A token tensor seen as [B, H, L0, L1, L2, C]: strides in elements, channels contiguous.
template <typename T>
struct Tokens {
  T* data = nullptr;
  int64_t b = 0, h = 0, s0 = 0, s1 = 0, s2 = 0;
};

// Keys or values per (split, batch, head), see packing.h. Element (row, pos, channel) of a slice is at
// data[split * split + b * batch + h * head + row * row + pos * key + channel * channel]: "columns"
// layout (channel-major, key = 1) serves dot products vectorized across keys, "rows" layout (channel = 1)
// serves axpys vectorized across channels; gradient accumulators use the rows layout, one slice per task.
template <typename T>
struct Packed {
  T* data = nullptr;
  int64_t split = 0, batch = 0, head = 0, row = 0, key = 0, channel = 0;
};

// Relative positional bias as [H, 2k0-1, 2k1-1, row], row = 2k2-1 + 2 * bias_margin(k2); `data` points
// at the first entry after the margin of head 0's first row.
template <typename T>
struct Bias {
  T* data = nullptr;
  int64_t head = 0, row = 0;
};

struct Shape {
  Geometry geometry;
  int64_t batch = 0;
  int64_t heads = 0;     // query heads
  int64_t kv_heads = 0;  // divides heads (GQA)
  int64_t dim = 0;       // q/k channels
  int64_t dim_v = 0;     // v/out channels
};

template <typename T>
struct FusedForwardArgs {
  Shape shape;
  T scale = 1;
  Tokens<const T> q;
  Tokens<T> out;
  Tokens<T> lse;  // one channel
  Packed<const T> k_cols, v_rows;
  Bias<const T> rpb;                       // data null: no bias
  int64_t n_add = 0;                       // additional keys/values (heads-last [B, N, Hkv, C])
  Packed<const T> k_add_cols, v_add_rows;  // one row per (batch, kv head)
  int64_t query_block = 1;                 // chunk length (neighborhood.h); task = (b, chunk, kv head)
};

// Task = (split, b, kv_head) in that order (outermost first), covering chunks
// [split * C / splits, (split + 1) * C / splits) of C; each task owns one slice of every accumulator
// below, and the host reduces the splits in order.
template <typename T>
struct FusedBackwardArgs {
  Shape shape;
  T scale = 1;
  Tokens<const T> q, out, dout, lse, dlse;  // dlse.data null: no grad_lse
  Tokens<T> dq;
  Packed<const T> k_cols, k_rows, v_cols;
  Bias<const T> rpb;
  int64_t n_add = 0;
  Packed<const T> k_add_cols, k_add_rows, v_add_cols;
  int64_t query_block = 1;
  int64_t splits = 1;
  Packed<T> dk, dv;          // rows layout, per task
  Packed<T> dk_add, dv_add;  // one row per task
  Bias<T> drpb;              // [heads / kv_heads] per task, `head` = per-head stride
  int64_t drpb_task = 0;     // per-task stride
};

// Unfused ops are heads-first with one head count; attn is [B, H, tokens, K] contiguous. Forward tasks
// are (b, h, chunk), backward tasks (split, b, h) as for the fused backward.
template <typename T>
struct QKForwardArgs {
  Shape shape;
  Tokens<const T> q;
  Packed<const T> k_cols;
  Bias<const T> rpb;
  T* attn = nullptr;
  int64_t query_block = 1;
};

template <typename T>
struct QKBackwardArgs {
  Shape shape;
  const T* dattn = nullptr;
  Tokens<const T> q;
  Packed<const T> k_rows;
  Tokens<T> dq;
  int64_t query_block = 1;
  int64_t splits = 1;
  Packed<T> dk;  // per task (split, b, h)
  Bias<T> drpb;  // one head per task; `head` = per-task stride; data null: no bias
};

template <typename T>
struct AVForwardArgs {
  Shape shape;
  const T* attn = nullptr;
  Packed<const T> v_rows;
  Tokens<T> out;
  int64_t query_block = 1;
};

template <typename T>
struct AVBackwardArgs {
  Shape shape;
  Tokens<const T> dout;
  const T* attn = nullptr;
  Packed<const T> v_cols;
  T* dattn = nullptr;
  int64_t query_block = 1;
  int64_t splits = 1;
  Packed<T> dv;  // per task (split, b, h)
};

// Every kernel as X(name, arguments): the one list that the table below, the kernels' declarations
// (kernels.h) and each variant's table (isa_table.cpp) are generated from.
#define NATTEN_CPU_KERNELS(X)          \
  X(fused_forward, FusedForwardArgs)   \
  X(fused_backward, FusedBackwardArgs) \
  X(qk_forward, QKForwardArgs)         \
  X(qk_backward, QKBackwardArgs)       \
  X(av_forward, AVForwardArgs)         \
  X(av_backward, AVBackwardArgs)

// Each entry runs tasks [begin, end) of its op on the calling thread.
template <typename T>
struct TypedKernels {
#define NATTEN_KERNEL_ENTRY(name, Args) void (*name)(const Args<T>&, int64_t, int64_t);
  NATTEN_CPU_KERNELS(NATTEN_KERNEL_ENTRY)
#undef NATTEN_KERNEL_ENTRY
};

struct KernelTable {
  const char* name;
  TypedKernels<float> f32;
  TypedKernels<double> f64;
};

// The variant chosen for this CPU (dispatch.cpp).
const KernelTable& kernel_table();

}  // namespace natten::cpu
