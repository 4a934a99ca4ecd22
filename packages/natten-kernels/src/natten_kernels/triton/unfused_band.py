"""Band kernels: the unfused ops on tensor cores for windows of any size (heads-first layout).

Take a segment of consecutive queries along the inner axis, all in one row of the outer axes. For one
outer slot ``(t0, t1)`` every query of the segment reads the same key row, and its inner-axis slots
``t2`` are the keys ``start(j) + t2`` of that row: a band of the ``[segment, keys]`` product. So a
program multiplies the segment against the span of keys the band reaches, one ``tl.dot`` per outer
slot, and moves the band between the product and the rows of ``W`` without any per-pair slot search
or division:

* making weights, each row's slots are a register gather of the product at columns
  ``start(j) - span start + t2`` (done in W's dtype when no bias follows: half the bytes through the
  layout conversion), stored as contiguous row pieces;
* using weights, the band is loaded straight from ``W[j, slot(t0, t1) + key - start(j)]``, an address
  contiguous along the keys, and multiplied on tensor cores.

A program walks the rows of a box of the outer axes one after another; the key tiles of each row are
software-pipelined (cp.async) across its outer slots.

* ``na_pairs_band_kernel``: ``W[i, t] = A_i . B_{n(i,t)} (+ rpb)``, invalid slots ``FILL``.
* ``na_gather_band_kernel``: ``O_i = sum_t W[i, t] B_{n(i,t)}``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import _group, _window
from natten_kernels.triton.prologue import _batch_head, _tile_origin
from natten_kernels.triton.unfused_kernels import _mm, _offsets


@triton.jit
def _segment(pid, bh, H, L, K2, DL, S2, NT1, NT2, G,
             C2: tl.constexpr, R0: tl.constexpr, R1: tl.constexpr, BJ: tl.constexpr):  # fmt: skip
    """The program's batch and head, dilation group, first outer row, and its inner segment: queries,
    their validity and windows, and the keys ``[lo, hi)`` that the segment's slots reach (windows start
    monotonically, so the first and last query bound them)."""
    g0, g1, g2, n0, n1, n2 = _group(pid % G, L, DL)
    x0, x1, jb = _tile_origin(pid // G, NT1, NT2, R0, R1, BJ)
    j = jb + tl.arange(0, BJ)
    js, je = _window(j, n2, K2, S2, C2)
    lo, _e = _window(jb, n2, K2, S2, C2)
    last, _e = _window(tl.minimum(jb + BJ, n2) - 1, n2, K2, S2, C2)
    b, h = _batch_head(bh, H)
    return b, h, g0, g1, g2, n0, n1, n2, x0, x1, j, j < n2, js, je, lo, last + K2


@triton.jit
def _band(kk, jvalid, js, je, KS, C: tl.constexpr, FULL: tl.constexpr):
    """The inner slot of each (query, key) pair, whether it lies in the band, and whether it is a key of
    the window (causal ends; groups shorter than the kernel)."""
    t2 = kk[None, :] - js[:, None]
    live = jvalid[:, None] & (t2 >= 0) & (t2 < KS[2])
    valid = live
    if C[2] or not FULL:
        valid = valid & (kk[None, :] < je[:, None])
    return t2, live, valid


@triton.jit
def _narrow(s, W, KEEP: tl.constexpr):
    """The product in W's dtype, unless (``KEEP``) a bias is still to be added in the accumulation dtype:
    the same rounding the store would do, and half the bytes through the gather's layout conversion."""
    if not KEEP:
        s = s.to(W.dtype.element_ty)
    return s


@triton.jit
def na_pairs_band_kernel(
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
    R0: tl.constexpr,
    R1: tl.constexpr,
    BJ: tl.constexpr,
    BK: tl.constexpr,
    SW: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (outer boxes x segments x groups, B x H); ``BLOCK_D`` covers the head dim, ``SW`` the inner
    axis's slots."""
    b, h, g0, g1, g2, n0, n1, n2, x0, x1, j, jvalid, js, je, lo, hi = _segment(
        tl.program_id(0), tl.program_id(1), H, L, KS[2], DL, ST[2], NT1, NT2, G, C[2], R0, R1, BJ
    )
    dd = tl.arange(0, BLOCK_D)
    dm = dd < HEAD_DIM
    t2 = tl.arange(0, SW)
    for i0 in range(x0, tl.minimum(x0 + R0, n0)):
        s0, e0 = _window(i0, n0, KS[0], ST[0], C[0])
        for i1 in range(x1, tl.minimum(x1 + R1, n1)):
            s1, e1 = _window(i1, n1, KS[1], ST[1], C[1])
            a_row = _offsets(b, h, sa, g0, g1, g2, i0, i1, j, DL)
            w_row = _offsets(b, h, sw, g0, g1, g2, i0, i1, j, DL)
            a = tl.load(A + a_row[:, None] + dd[None, :], mask=jvalid[:, None] & dm[None, :], other=0.0)
            for k_lo in range(lo, hi, BK):
                kk = k_lo + tl.arange(0, BK)
                # slot t2 of query j is column js - k_lo + t2 of the product: a register gather per row
                col = (js - k_lo)[:, None] + t2[None, :]
                live = jvalid[:, None] & (t2 < KS[2])[None, :] & (col >= 0) & (col < BK)
                valid = live
                if C[2] or not FULL:
                    valid = valid & (js[:, None] + t2[None, :] < tl.minimum(je, n2)[:, None])
                col = tl.minimum(tl.maximum(col, 0), BK - 1)
                for t0 in range(0, KS[0]):
                    for t1 in range(0, KS[1]):
                        # none of the row's keys count where the outer slot is outside the window (causal)
                        ok = (s0 + t0 < e0) & (s1 + t1 < e1)
                        b_row = _offsets(b, h, sb, g0, g1, g2, s0 + t0, s1 + t1, kk, DL)
                        k_in = kk < tl.where(ok, tl.minimum(n2, hi), 0)
                        k = tl.load(B + b_row[:, None] + dd[None, :], mask=k_in[:, None] & dm[None, :], other=0.0)
                        s = tl.gather(_narrow(_mm(a, tl.trans(k), False, PREC, ACC), W, HAS_RPB), col, axis=1)
                        in_row = valid & (t2 < tl.where(ok, KS[2], 0))[None, :]
                        if HAS_RPB:  # rpb[h, (k-1) + key - query] per axis
                            r_off = (
                                h * s_r[0] + (KS[0] - 1 + s0 + t0 - i0) * s_r[1] + (KS[1] - 1 + s1 + t1 - i1) * s_r[2]
                            )
                            r_ptr = RPB + r_off + (KS[2] - 1 + js - j)[:, None] * s_r[3] + (t2 * s_r[3])[None, :]
                            s += tl.load(r_ptr, mask=in_row, other=0.0).to(ACC)
                        s = tl.where(in_row, s, FILL)
                        w_ptr = W + w_row[:, None] + ((t0 * KS[1] + t1) * KS[2] + t2)[None, :]
                        tl.store(w_ptr, s.to(W.dtype.element_ty), mask=live)


@triton.jit
def na_gather_band_kernel(
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
    R0: tl.constexpr,
    R1: tl.constexpr,
    BJ: tl.constexpr,
    BK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
    ACC: tl.constexpr,
):
    """Grid (outer boxes x segments x groups, B x H); ``BLOCK_D`` covers the head dim."""
    b, h, g0, g1, g2, n0, n1, n2, x0, x1, j, jvalid, js, je, lo, hi = _segment(
        tl.program_id(0), tl.program_id(1), H, L, KS[2], DL, ST[2], NT1, NT2, G, C[2], R0, R1, BJ
    )
    dd = tl.arange(0, BLOCK_D)
    dm = dd < HEAD_DIM
    for i0 in range(x0, tl.minimum(x0 + R0, n0)):
        s0, e0 = _window(i0, n0, KS[0], ST[0], C[0])
        for i1 in range(x1, tl.minimum(x1 + R1, n1)):
            s1, e1 = _window(i1, n1, KS[1], ST[1], C[1])
            w_row = _offsets(b, h, sw, g0, g1, g2, i0, i1, j, DL)
            acc = tl.zeros([BJ, BLOCK_D], ACC)
            for k_lo in range(lo, hi, BK):
                kk = k_lo + tl.arange(0, BK)
                t2, _live, valid = _band(kk, jvalid, js, je, KS, C, FULL)
                for t0 in range(0, KS[0]):
                    for t1 in range(0, KS[1]):
                        k_in = kk < tl.where((s0 + t0 < e0) & (s1 + t1 < e1), tl.minimum(n2, hi), 0)
                        w_ptr = W + w_row[:, None] + ((t0 * KS[1] + t1) * KS[2] + t2)
                        w = tl.load(w_ptr, mask=valid & k_in[None, :], other=0.0)
                        b_row = _offsets(b, h, sb, g0, g1, g2, s0 + t0, s1 + t1, kk, DL)
                        v = tl.load(B + b_row[:, None] + dd[None, :], mask=k_in[:, None] & dm[None, :], other=0.0)
                        acc += _mm(w.to(v.dtype), v, False, PREC, ACC)
            o_row = _offsets(b, h, so, g0, g1, g2, i0, i1, j, DL)
            tl.store(O + o_row[:, None] + dd[None, :], acc.to(O.dtype.element_ty), mask=jvalid[:, None] & dm[None, :])
