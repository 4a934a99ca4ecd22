"""Geometry of the fused kernels (rank-3 internal view, heads-last layout): windows, tiles, masks,
addresses and TMA descriptors, shared by fused_forward.py and fused_backward.py (and the unfused
kernels' window math).

Geometry shared by every kernel (see docs/semantics.md):

* The problem is rank 3; 1D/2D problems arrive with leading unit axes (kernel 1, stride 1). ``RANK``
  (constexpr) says which axes are real: axis ``a`` is active when ``a >= 3 - RANK``; inactive axes
  cost nothing (no window, mask or index math).
* Dilation is handled by partitioning: a program works inside one dilation group ``(g0, g1, g2)``;
  group-local coordinate ``p`` maps to the token ``g + p * d`` (strided addressing, never a copy).
* A query tile is a box ``T0 x T1 x T2`` of group-local coordinates; flattened to ``BLOCK_Q`` rows.
  Its keys are the union of its windows, a haloed box ``[lo, hi)`` per axis (windows are monotonic
  in the query coordinate, so the box comes from the first and last query of the tile).
  Key tiles are boxes ``K0 x K1 x K2`` that tile that halo box; nothing outside it is loaded. On an
  axis the key tiles start on a multiple of the key box when that costs no extra tile (more tiles
  are then fully visited), else at ``lo``.
* Masks are per axis: on an axis where every query's window contains the key tile (the latest
  window start is at or before it, the earliest window end at or after it) the tile needs no mask;
  a tile pays only for the axes on which it is partially visited, and a fully visited tile for none.
* Addresses: a tile's base offset is one int64 scalar; the offsets of its rows relative to that base
  are computed once per program (int32 unless ``REL64``), so the hot loop adds one scalar per tile.
* Softmax runs in base 2 (``exp2``) with ``scale * log2(e)`` folded into the logits.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _window(p, n, K, S, CAUSAL: tl.constexpr):
    """Window ``[start, end)`` of group-local query ``p`` on one axis of group length ``n``."""
    if CAUSAL:
        c = tl.minimum((p // S) * S + S - 1, n - 1)
        start = tl.maximum(c - K + 1, 0)
        end = p + 1
    else:
        c = tl.minimum((p // S) * S + S // 2, n - 1)
        start = tl.minimum(tl.maximum(c - K // 2, 0), n - K)
        end = start + K
    return start, end


@triton.jit
def _windows(i0, i1, i2, n0, n1, n2, KS, ST, C: tl.constexpr):
    """``_window`` on each axis (``KS``, ``ST``, ``C``: per-axis kernel sizes, strides, causal flags):
    ``start0, end0, start1, end1, start2, end2``."""
    s0, e0 = _window(i0, n0, KS[0], ST[0], C[0])
    s1, e1 = _window(i1, n1, KS[1], ST[1], C[1])
    s2, e2 = _window(i2, n2, KS[2], ST[2], C[2])
    return s0, e0, s1, e1, s2, e2


@triton.jit
def _group(grp, L, DL):
    """Dilation group number -> its coordinates and its length per axis (extents ``L``, dilations ``DL``)."""
    g0 = grp // (DL[1] * DL[2])
    g1 = (grp // DL[2]) % DL[1]
    g2 = grp % DL[2]
    n0 = (L[0] - g0 + DL[0] - 1) // DL[0]
    n1 = (L[1] - g1 + DL[1] - 1) // DL[1]
    n2 = (L[2] - g2 + DL[2] - 1) // DL[2]
    return g0, g1, g2, n0, n1, n2


@triton.jit
def _box_rows(BLOCK: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr):
    r = tl.arange(0, BLOCK)
    return r // (B1 * B2), (r // B2) % B1, r % B2


@triton.jit
def _split(t, n1, n2, RANK: tl.constexpr):
    """Tile index ``t`` -> per-axis tile numbers (row-major over the active axes)."""
    i0 = 0
    i1 = 0
    i2 = t
    if RANK == 2:
        i1 = t // n2
        i2 = t % n2
    if RANK == 3:
        i0 = t // (n1 * n2)
        i1 = (t // n2) % n1
        i2 = t % n2
    return i0, i1, i2


@triton.jit
def _span(qb, T: tl.constexpr, n, e, KS, ST, C: tl.constexpr, KB: tl.constexpr):
    """Keys of the query tile ``[qb, qb + T)`` (queries end at ``e``) on one axis: the first key tile's
    start, the number of key tiles, the halo end, the latest window start and the earliest window end."""
    lo, emin = _window(qb, n, KS, ST, C)
    smax, hi = _window(tl.minimum(qb + T, e) - 1, n, KS, ST, C)
    cnt = (hi - lo + KB - 1) // KB
    alo = lo - lo % KB
    aligned = ((hi - alo + KB - 1) // KB == cnt).to(tl.int32)  # grid-aligned tiles when free
    return lo - (lo - alo) * aligned, cnt, hi, smax, emin


@triton.jit
def _key_box(qb0, qb1, qb2, n0, n1, n2, e0, e1, e2, KS, ST, C: tl.constexpr, T: tl.constexpr, KB: tl.constexpr):
    """``_span`` on each axis (inner first; query box ``T``, key box ``KB``, the group's queries ending
    at ``e``) and the number of key tiles the query tile visits (none for a tile past its queries)."""
    kl2, nk2, hi2, smax2, emin2 = _span(qb2, T[2], n2, e2, KS[2], ST[2], C[2], KB[2])
    kl1, nk1, hi1, smax1, emin1 = _span(qb1, T[1], n1, e1, KS[1], ST[1], C[1], KB[1])
    kl0, nk0, hi0, smax0, emin0 = _span(qb0, T[0], n0, e0, KS[0], ST[0], C[0], KB[0])
    tile_ok = (qb0 < e0) & (qb1 < e1) & (qb2 < e2)
    total = nk0 * nk1 * nk2 * tile_ok.to(tl.int32)
    return kl0, kl1, kl2, nk1, nk2, hi0, hi1, hi2, smax0, smax1, smax2, emin0, emin1, emin2, total


@triton.jit
def _inside(kj, qs, qe):
    """``qs <= kj < qe`` in one unsigned compare (a key left of the window wraps to a huge value)."""
    return (kj - qs).to(tl.uint32) < (qe - qs).to(tl.uint32)


@triton.jit
def _mask_axis(s, kb, KB: tl.constexpr, smax, emin, kj, qs, qe):
    """Mask scores to the windows along one axis, unless every query's window on this axis contains
    the key tile ``[kb, kb + KB)`` (latest start at or before it, earliest end at or after it): a tile
    only pays for the axes on which it is partially visited. ``kj``/``qs``/``qe`` come pre-broadcast."""
    if (smax > kb) | (kb + KB > emin):
        s = tl.where(_inside(kj, qs, qe), s, float("-inf"))
    return s


@triton.jit
def _mask_box(s, kb0, kb1, kb2, KB: tl.constexpr, smax0, smax1, smax2, emin0, emin1, emin2, kj0, kj1, kj2,
              qs0, qe0, qs1, qe1, qs2, qe2, RANK: tl.constexpr):  # fmt: skip
    """``_mask_axis`` on each active axis of a ``[queries, keys]`` tile (inner axis first)."""
    s = _mask_axis(s, kb2, KB[2], smax2, emin2, kj2[None, :], qs2[:, None], qe2[:, None])
    if RANK >= 2:
        s = _mask_axis(s, kb1, KB[1], smax1, emin1, kj1[None, :], qs1[:, None], qe1[:, None])
    if RANK >= 3:
        s = _mask_axis(s, kb0, KB[0], smax0, emin0, kj0[None, :], qs0[:, None], qe0[:, None])
    return s


@triton.jit
def _mask_inverse(st, kb, KB: tl.constexpr, qb, T: tl.constexpr, qi, kj, n, KS, ST, C: tl.constexpr):
    """The dk/dv pass's ``_mask_axis`` for a ``[keys, queries]`` tile: the query tile's window bounds
    decide whether a mask is needed, and the per-query windows are computed only then (most tiles of
    a large window need none; this loop runs them for every streamed query tile)."""
    _lo, emin = _window(qb, n, KS, ST, C)
    smax, _hi = _window(tl.minimum(qb + T, n) - 1, n, KS, ST, C)
    if (smax > kb) | (kb + KB > emin):
        qs, qe = _window(qi, n, KS, ST, C)
        st = tl.where(_inside(kj[:, None], qs[None, :], qe[None, :]), st, float("-inf"))
    return st


@triton.jit
def _rows_ok(i0, i1, i2, n0, n1, n2, RANK: tl.constexpr):
    ok = i2 < n2
    if RANK >= 2:
        ok = ok & (i1 < n1)
    if RANK >= 3:
        ok = ok & (i0 < n0)
    return ok


@triton.jit
def _off(c0, c1, c2, DL, s, WIDE: tl.constexpr):
    """Memory offset of group-local coordinates (dilation-strided; ``DL = (1, 1, 1)`` for tokens) in a
    tensor of strides ``s = (batch, axis 0, axis 1, axis 2, head)``; int64 when ``WIDE``."""
    if WIDE:  # tl.cast also takes plain ints (a coordinate of an inactive axis is the constant 0)
        c0 = tl.cast(c0 * DL[0], tl.int64)
        c1 = tl.cast(c1 * DL[1], tl.int64)
        c2 = tl.cast(c2 * DL[2], tl.int64)
    else:
        c0 = c0 * DL[0]
        c1 = c1 * DL[1]
        c2 = c2 * DL[2]
    return c0 * s[1] + c1 * s[2] + c2 * s[3]


@triton.jit
def _cols(rows_ok, offs, DIM: tl.constexpr, BLOCK: tl.constexpr):
    """Load/store mask of a [rows, BLOCK] tile: no column mask when the head dim fills the block."""
    mask = rows_ok[:, None]
    if DIM != BLOCK:
        mask = mask & (offs < DIM)[None, :]
    return mask


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _bias(rpb_ptr, s_r, h, KS, qi0, qi1, qi2, q_ok, kj0, kj1, kj2, k_ok, KEYS_FIRST: tl.constexpr):
    """rpb[h, (k-1) + (key - query)] per axis (log2 units), gathered for a ``[queries, keys]`` tile
    (``KEYS_FIRST``: ``[keys, queries]``) from the coordinates and validity of its queries and keys."""
    if KEYS_FIRST:
        q0, q1, q2, k0, k1, k2 = qi0[None, :], qi1[None, :], qi2[None, :], kj0[:, None], kj1[:, None], kj2[:, None]
        valid = k_ok[:, None] & q_ok[None, :]
    else:
        q0, q1, q2, k0, k1, k2 = qi0[:, None], qi1[:, None], qi2[:, None], kj0[None, :], kj1[None, :], kj2[None, :]
        valid = q_ok[:, None] & k_ok[None, :]
    K0, K1, K2 = KS[0], KS[1], KS[2]
    i0 = K0 - 1 + k0 - q0
    i1 = K1 - 1 + k1 - q1
    i2 = K2 - 1 + k2 - q2
    ok = valid & (i0 >= 0) & (i0 < 2 * K0 - 1) & (i1 >= 0) & (i1 < 2 * K1 - 1) & (i2 >= 0) & (i2 < 2 * K2 - 1)
    ptr = rpb_ptr + h * s_r[0] + i0 * s_r[1] + i1 * s_r[2] + i2 * s_r[3]
    return tl.load(ptr, mask=ok, other=0.0).to(tl.float32) * 1.4426950408889634


@triton.jit
def _kv_descriptor(base, n0, n1, n2, DL, s, KB: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr):
    """TMA descriptor over one dilation group of K or V: shape [n0, n1, n2, DIM], dilation in the
    strides; rows past the group and columns past DIM are zero-filled by the copy engine."""
    return tl.make_tensor_descriptor(
        base,
        shape=[n0, n1, n2, DIM],
        strides=[DL[0] * s[1], DL[1] * s[2], DL[2] * s[3], 1],
        block_shape=[KB[0], KB[1], KB[2], BLOCK],
    )


# ----------------------------------------------------------------------------- inverse neighborhoods (dk/dv pass)


@triton.jit
def _first_query(n, target, K, S, C: tl.constexpr, LOGN, BY_END: tl.constexpr):
    """Smallest group-local query p in [0, n] whose window end exceeds ``target`` (``BY_END``), or whose
    window start is >= ``target``: windows move monotonically with p, so a binary search."""
    lo = n * 0
    hi = n + 0
    for _ in range(0, LOGN):
        mid = (lo + hi) // 2
        st, e = _window(mid, n, K, S, C)
        if BY_END:
            go = e > target
        else:
            go = st >= target
        active = lo < hi
        up = (active & go).to(tl.int32)
        dn = (active & (~go)).to(tl.int32)
        hi = hi + (mid - hi) * up
        lo = lo + (mid + 1 - lo) * dn
    return lo


@triton.jit
def _inverse(kb, KB: tl.constexpr, n, KS, ST, C: tl.constexpr, T: tl.constexpr, LOGN, qs, qe, SUB: tl.constexpr):
    """Queries whose window meets the key tile ``[kb, kb + KB)`` on one axis: first query, query tiles
    (``SUB``: only the queries ``[qs, qe)``)."""
    pl = _first_query(n, kb, KS, ST, C, LOGN, True)
    ph = _first_query(n, tl.minimum(kb + KB, n), KS, ST, C, LOGN, False)
    if SUB:
        pl = tl.maximum(pl, qs)
        ph = tl.minimum(ph, qe)
    return pl, tl.maximum(ph - pl + T - 1, 0) // T
