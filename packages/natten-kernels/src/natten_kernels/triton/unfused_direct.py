"""Slot-major ("direct") kernels for the unfused ops with small windows (heads-first layout).

The halo kernels (unfused_kernels.py) compute a query box against the key tiles of its halo on tensor
cores, then map every [query, key] pair to its slot: window tests, slot arithmetic and a register
gather per pair. For windows of a few dozen to a few hundred keys that per-pair integer work, not the
memory traffic, sets the speed. Here a program holds a box of queries and walks the window's slots
one at a time (nested loops per axis, so no division): the key of slot ``t`` of query ``i`` is
``start(i) + t`` per axis, so each step reads one key row per query at a per-query base plus a
per-slot (uniform) offset, and the products run on CUDA cores in the accumulation dtype (IEEE
float32 / float64: these kernels serve both variants). ``FULL`` (every window spans the whole kernel
on non-causal axes, which holds when each dilation group is at least a kernel long) drops the
per-slot window tests there.

* ``na_pairs_direct_kernel``: ``W[i, t] = A_i . B_{n(i,t)} (+ rpb)``, invalid slots ``FILL``.
* ``na_gather_direct_kernel``: ``O_i = sum_t W[i, t] B_{n(i,t)}``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import _windows
from natten_kernels.triton.prologue import _batch_head, _program_box
from natten_kernels.triton.unfused_kernels import _offsets


@triton.jit
def _query_box(pid, bh, H, L, KS, DL, ST, NT1, NT2, G, C: tl.constexpr, T: tl.constexpr):
    """The program's batch and head, dilation group, group-local queries, their validity and windows."""
    g0, g1, g2, n0, n1, n2, _qb0, _qb1, _qb2, qi0, qi1, qi2, qvalid = _program_box(pid, G, L, DL, NT1, NT2, T, 0)
    qs0, qe0, qs1, qe1, qs2, qe2 = _windows(qi0, qi1, qi2, n0, n1, n2, KS, ST, C)
    b, h = _batch_head(bh, H)
    return b, h, g0, g1, g2, qi0, qi1, qi2, qvalid, qs0, qe0, qs1, qe1, qs2, qe2


@triton.jit
def _channels(dd, HEAD_DIM, EVEN_D: tl.constexpr):
    """The channel mask; a constant when the blocks tile the head dim (so only rows are masked)."""
    if EVEN_D:
        return tl.full(dd.shape, 1, tl.int1)
    return dd < HEAD_DIM


@triton.jit
def _in_window(qvalid, qs0, qe0, qs1, qe1, qs2, qe2, t0, t1, t2, C0: tl.constexpr, C1: tl.constexpr,
               C2: tl.constexpr, FULL: tl.constexpr):  # fmt: skip
    """Whether slot (t0, t1, t2) of each query is a key of its window."""
    ok = qvalid
    if C0 or not FULL:
        ok = ok & (qs0 + t0 < qe0)
    if C1 or not FULL:
        ok = ok & (qs1 + t1 < qe1)
    if C2 or not FULL:
        ok = ok & (qs2 + t2 < qe2)
    return ok


@triton.jit
def na_pairs_direct_kernel(
    A,
    B,
    RPB,
    W,
    sa,
    sb,
    sw,
    s_r,
    L,
    KS,
    DL,
    ST,
    NT1,
    NT2,
    G,
    H,
    HEAD_DIM,
    FILL: tl.constexpr,
    C: tl.constexpr,
    FULL: tl.constexpr,
    T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    CH: tl.constexpr,
    HAS_RPB: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (query boxes x groups, B x H). The box's rows of ``A`` stay in registers (``BLOCK_D`` covers
    the head dim); each step takes ``CH`` slots of the inner axis: contiguous keys, whose full rows the
    lanes of a warp read together, and contiguous columns of W."""
    b, h, g0, g1, g2, qi0, qi1, qi2, qvalid, qs0, qe0, qs1, qe1, qs2, qe2 = _query_box(
        tl.program_id(0), tl.program_id(1), H, L, KS, DL, ST,
        NT1, NT2, G, C, T,
    )  # fmt: skip
    a_row = _offsets(b, h, sa, g0, g1, g2, qi0, qi1, qi2, DL)
    w_row = _offsets(b, h, sw, g0, g1, g2, qi0, qi1, qi2, DL)
    k_row = _offsets(b, h, sb, g0, g1, g2, qs0, qs1, qs2, DL)
    dd = tl.arange(0, BLOCK_D)
    dm = _channels(dd, HEAD_DIM, EVEN_D)
    a = tl.load(A + a_row[:, None] + dd[None, :], mask=qvalid[:, None] & dm[None, :], other=0.0).to(ACC)
    a = a[:, None, :]
    r_row = (
        h * s_r[0]
        + (KS[0] - 1 + qs0 - qi0) * s_r[1]
        + (KS[1] - 1 + qs1 - qi1) * s_r[2]
        + (KS[2] - 1 + qs2 - qi2) * s_r[3]
    )
    cols = tl.arange(0, CH)
    for t0 in range(0, KS[0]):
        for t1 in range(0, KS[1]):
            rows_ok = _in_window(qvalid, qs0, qe0, qs1, qe1, qs2, qe2, t0, t1, 0, C[0], C[1], False, True)
            k_base = k_row + (t0 * DL[0]).to(tl.int64) * sb[2] + (t1 * DL[1]).to(tl.int64) * sb[3]
            for t2_start in range(0, KS[2], CH):
                # CH consecutive slots of the inner axis at once: [queries, CH, channels] key rows, whose
                # products reduce over channels into a [queries, CH] segment of W's rows
                t2 = t2_start + cols
                live = qvalid[:, None] & (t2 < KS[2])[None, :]
                valid = live & rows_ok[:, None]
                if C[2] or not FULL:
                    valid = valid & ((qs2[:, None] + t2[None, :]) < qe2[:, None])
                k_ptr = (
                    B + (k_base[:, None] + (t2 * DL[2]).to(tl.int64)[None, :] * sb[4])[:, :, None] + dd[None, None, :]
                )
                k = tl.load(k_ptr, mask=valid[:, :, None] & dm[None, None, :], other=0.0)
                s = tl.sum(a * k.to(ACC), axis=2)
                if HAS_RPB:  # rpb[h, (k-1) + key - query] per axis, key = start + slot
                    r_ptr = RPB + (r_row + t0 * s_r[1] + t1 * s_r[2])[:, None] + (t2 * s_r[3])[None, :]
                    s += tl.load(r_ptr, mask=valid, other=0.0).to(ACC)
                s = tl.where(valid, s, FILL)
                t = (t0 * KS[1] + t1) * KS[2] + t2
                tl.store(W + w_row[:, None] + t[None, :], s.to(W.dtype.element_ty), mask=live)


@triton.jit
def na_gather_direct_kernel(
    W,
    B,
    O,  # noqa: E741
    sw,
    sb,
    so,
    L,
    KS,
    DL,
    ST,
    NT1,
    NT2,
    G,
    H,
    HEAD_DIM,
    C: tl.constexpr,
    FULL: tl.constexpr,
    T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (query boxes x groups, channel chunks, B x H); one slot per step, no cross-thread sums."""
    b, h, g0, g1, g2, qi0, qi1, qi2, qvalid, qs0, qe0, qs1, qe1, qs2, qe2 = _query_box(
        tl.program_id(0), tl.program_id(2), H, L, KS, DL, ST,
        NT1, NT2, G, C, T,
    )  # fmt: skip
    w_row = _offsets(b, h, sw, g0, g1, g2, qi0, qi1, qi2, DL)
    o_row = _offsets(b, h, so, g0, g1, g2, qi0, qi1, qi2, DL)
    b_row = _offsets(b, h, sb, g0, g1, g2, qs0, qs1, qs2, DL)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = _channels(dd, HEAD_DIM, EVEN_D)
    acc = tl.zeros([T[0] * T[1] * T[2], BLOCK_D], ACC)
    t = 0
    for t0 in range(0, KS[0]):
        for t1 in range(0, KS[1]):
            for t2 in range(0, KS[2]):
                valid = _in_window(qvalid, qs0, qe0, qs1, qe1, qs2, qe2, t0, t1, t2, C[0], C[1], C[2], FULL)
                w = tl.load(W + w_row + t, mask=valid, other=0.0)
                b_col = (
                    (t0 * DL[0]).to(tl.int64) * sb[2]
                    + (t1 * DL[1]).to(tl.int64) * sb[3]
                    + (t2 * DL[2]).to(tl.int64) * sb[4]
                )
                v = tl.load(B + (b_row + b_col)[:, None] + dd[None, :], mask=valid[:, None] & dm[None, :], other=0.0)
                acc += w.to(ACC)[:, None] * v.to(ACC)
                t += 1
    tl.store(O + o_row[:, None] + dd[None, :], acc.to(O.dtype.element_ty), mask=qvalid[:, None] & dm[None, :])
