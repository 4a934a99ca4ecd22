"""Triton kernels for fused neighborhood attention (rank-3 internal view, heads-last layout).

Geometry shared by every kernel (see docs/internals.md and design.md section 3):

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

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------- geometry helpers


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
def _group(grp, L0, L1, L2, D0, D1, D2):
    g0 = grp // (D1 * D2)
    g1 = (grp // D2) % D1
    g2 = grp % D2
    n0 = (L0 - g0 + D0 - 1) // D0
    n1 = (L1 - g1 + D1 - 1) // D1
    n2 = (L2 - g2 + D2 - 1) // D2
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
def _span(qb, T: tl.constexpr, n, KS, ST, C: tl.constexpr, KB: tl.constexpr):
    """Keys of the query tile ``[qb, qb + T)`` on one axis: the first key tile's start, the number of
    key tiles, the halo end, the latest window start and the earliest window end."""
    lo, emin = _window(qb, n, KS, ST, C)
    smax, hi = _window(tl.minimum(qb + T, n) - 1, n, KS, ST, C)
    cnt = (hi - lo + KB - 1) // KB
    alo = lo - lo % KB
    aligned = ((hi - alo + KB - 1) // KB == cnt).to(tl.int32)  # grid-aligned tiles when free
    return lo - (lo - alo) * aligned, cnt, hi, smax, emin


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
def _off(c0, c1, c2, DL0, DL1, DL2, s0, s1, s2, WIDE: tl.constexpr):
    """Memory offset of group-local coordinates (dilation-strided); int64 when ``WIDE``."""
    if WIDE:  # tl.cast also takes plain ints (a coordinate of an inactive axis is the constant 0)
        c0 = tl.cast(c0 * DL0, tl.int64)
        c1 = tl.cast(c1 * DL1, tl.int64)
        c2 = tl.cast(c2 * DL2, tl.int64)
    else:
        c0 = c0 * DL0
        c1 = c1 * DL1
        c2 = c2 * DL2
    return c0 * s0 + c1 * s1 + c2 * s2


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
def _bias(rpb_ptr, s_rh, s_r0, s_r1, s_r2, h, K0, K1, K2, qi0, qi1, qi2, kj0, kj1, kj2, valid):
    """rpb[h, (k-1) + (key - query)] per axis, gathered for a [rows, cols] pair grid (log2 units)."""
    i0 = K0 - 1 + kj0 - qi0
    i1 = K1 - 1 + kj1 - qi1
    i2 = K2 - 1 + kj2 - qi2
    ok = valid & (i0 >= 0) & (i0 < 2 * K0 - 1) & (i1 >= 0) & (i1 < 2 * K1 - 1) & (i2 >= 0) & (i2 < 2 * K2 - 1)
    ptr = rpb_ptr + h * s_rh + i0 * s_r0 + i1 * s_r1 + i2 * s_r2
    return tl.load(ptr, mask=ok, other=0.0).to(tl.float32) * 1.4426950408889634


@triton.jit
def _kv_descriptor(
    base,
    n0,
    n1,
    n2,
    DL0,
    DL1,
    DL2,
    s0,
    s1,
    s2,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    DIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """TMA descriptor over one dilation group of K or V: shape [n0, n1, n2, DIM], dilation in the
    strides; rows past the group and columns past DIM are zero-filled by the copy engine."""
    return tl.make_tensor_descriptor(
        base, shape=[n0, n1, n2, DIM], strides=[DL0 * s0, DL1 * s1, DL2 * s2, 1], block_shape=[KB0, KB1, KB2, BLOCK]
    )


# ----------------------------------------------------------------------------- forward


@triton.jit
def na_fwd_kernel(
    Q,
    K,
    V,
    O,  # noqa: E741
    LSE,
    RPB,
    sqb,
    sq0,
    sq1,
    sq2,
    sqh,
    skb,
    sk0,
    sk1,
    sk2,
    skh,
    svb,
    sv0,
    sv1,
    sv2,
    svh,
    sob,
    so0,
    so1,
    so2,
    soh,
    slb,
    sl0,
    sl1,
    sl2,
    slh,
    s_rh,
    s_r0,
    s_r1,
    s_r2,
    L0,
    L1,
    L2,
    KS0,
    KS1,
    KS2,
    DL0,
    DL1,
    DL2,
    ST0,
    ST1,
    ST2,
    NT1,
    NT2,
    G,
    QPK,
    qk_scale,
    RANK: tl.constexpr,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    REL64: tl.constexpr,
    TMA: tl.constexpr,
    SCALE_FIRST: tl.constexpr,
    TMA_HOST: tl.constexpr = False,
    Q_TMA: tl.constexpr = False,
):
    """``TMA_HOST``: ``K``/``V`` are host-built descriptors over ``[B, L0, L1, L2, H * D]`` (no dilation,
    head dims that fill their blocks), which spares every program building its own (``TMA``).
    ``Q_TMA``: ``Q`` is one too (the query tile lands in shared memory without staging in registers)."""
    BLOCK_Q: tl.constexpr = T0 * T1 * T2
    BLOCK_K: tl.constexpr = KB0 * KB1 * KB2
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hk = h // QPK
    grp = pid % G
    tile = pid // G
    g0, g1, g2, n0, n1, n2 = _group(grp, L0, L1, L2, DL0, DL1, DL2)
    qb0 = (tile // (NT1 * NT2)) * T0
    qb1 = ((tile // NT2) % NT1) * T1
    qb2 = (tile % NT2) * T2

    r0, r1, r2 = _box_rows(BLOCK_Q, T1, T2)
    qi0 = qb0 + r0
    qi1 = qb1 + r1
    qi2 = qb2 + r2
    qvalid = _rows_ok(qi0, qi1, qi2, n0, n1, n2, RANK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    if Q_TMA:
        q = tl.reshape(Q.load([tl.program_id(2), qb0, qb1, qb2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
    else:
        x_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, sq0, sq1, sq2, True)
        q = tl.load(
            Q + b * sqb + h.to(tl.int64) * sqh + x_row[:, None] + offs_d[None, :],
            mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D),
            other=0.0,
        )

    # per-query windows (used on partial tiles only) and, per axis, the key tiles of this query tile
    qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
    qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
    qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
    kl2, nk2, hi2, smax2, emin2 = _span(qb2, T2, n2, KS2, ST2, C2, KB2)
    kl1, nk1, hi1, smax1, emin1 = _span(qb1, T1, n1, KS1, ST1, C1, KB1)
    kl0, nk0, hi0, smax0, emin0 = _span(qb0, T0, n0, KS0, ST0, C0, KB0)
    tile_ok = (qb0 < n0) & (qb1 < n1) & (qb2 < n2)
    total = nk0 * nk1 * nk2 * tile_ok.to(tl.int32)

    c0, c1, c2 = _box_rows(BLOCK_K, KB1, KB2)
    if not TMA_HOST:
        k_base = K + b * skb + hk.to(tl.int64) * skh + _off(g0, g1, g2, 1, 1, 1, sk0, sk1, sk2, True)
        v_base = V + b * svb + hk.to(tl.int64) * svh + _off(g0, g1, g2, 1, 1, 1, sv0, sv1, sv2, True)
        if TMA:
            k_desc = _kv_descriptor(k_base, n0, n1, n2, DL0, DL1, DL2, sk0, sk1, sk2, KB0, KB1, KB2, HEAD_DIM, BLOCK_D)
            v_desc = _kv_descriptor(
                v_base, n0, n1, n2, DL0, DL1, DL2, sv0, sv1, sv2, KB0, KB1, KB2, HEAD_DIM_V, BLOCK_DV
            )
        else:
            k_rel = _off(c0, c1, c2, DL0, DL1, DL2, sk0, sk1, sk2, REL64)[:, None] + offs_d[None, :]
            v_rel = _off(c0, c1, c2, DL0, DL1, DL2, sv0, sv1, sv2, REL64)[:, None] + offs_dv[None, :]

    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    for t in range(0, total):
        i0, i1, i2 = _split(t, nk1, nk2, RANK)
        kb0 = kl0 + i0 * KB0
        kb1 = kl1 + i1 * KB1
        kb2 = kl2 + i2 * KB2
        kj0 = kb0 + c0
        kj1 = kb1 + c1
        kj2 = kb2 + c2
        if TMA_HOST:
            k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
        elif TMA:
            k = tl.reshape(k_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_D])
        else:
            kvalid = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
            tile_off = _off(kb0, kb1, kb2, DL0, DL1, DL2, sk0, sk1, sk2, True)
            k = tl.load(k_base + tile_off + k_rel, mask=_cols(kvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
        s = _dot(q, tl.trans(k), PREC)
        if SCALE_FIRST:
            s = s * qk_scale
            s_scale = 1.0
        else:  # the scale rides in the row max and in one fused multiply-add before exp2
            s_scale = qk_scale
        if HAS_RPB:
            s += _bias(
                RPB,
                s_rh,
                s_r0,
                s_r1,
                s_r2,
                h,
                KS0,
                KS1,
                KS2,
                qi0[:, None],
                qi1[:, None],
                qi2[:, None],
                kj0[None, :],
                kj1[None, :],
                kj2[None, :],
                qvalid[:, None] & _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)[None, :],
            )
        s = _mask_axis(s, kb2, KB2, smax2, emin2, kj2[None, :], qs2[:, None], qe2[:, None])
        if RANK >= 2:
            s = _mask_axis(s, kb1, KB1, smax1, emin1, kj1[None, :], qs1[:, None], qe1[:, None])
        if RANK >= 3:
            s = _mask_axis(s, kb0, KB0, smax0, emin0, kj0[None, :], qs0[:, None], qe0[:, None])
        m_new = tl.maximum(m_i, tl.max(s, 1) * s_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s * s_scale - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if TMA_HOST:
            v = tl.reshape(V.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM_V]), [BLOCK_K, BLOCK_DV])
        elif TMA:
            v = tl.reshape(v_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_DV])
        else:
            v_off = _off(kb0, kb1, kb2, DL0, DL1, DL2, sv0, sv1, sv2, True)
            v = tl.load(v_base + v_off + v_rel, mask=_cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV), other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc * (1.0 / l_safe)[:, None]
    o_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, so0, so1, so2, True)
    tl.store(
        O + b * sob + h.to(tl.int64) * soh + o_row[:, None] + offs_dv[None, :],
        out.to(O.dtype.element_ty),
        mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
    )
    lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
    l_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, sl0, sl1, sl2, True)
    tl.store(LSE + b * slb + h.to(tl.int64) * slh + l_row, lse, mask=qvalid)


# ----------------------------------------------------------------------------- backward


@triton.jit
def na_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    RPB,
    sqb,
    sq0,
    sq1,
    sq2,
    sqh,
    skb,
    sk0,
    sk1,
    sk2,
    skh,
    svb,
    sv0,
    sv1,
    sv2,
    svh,
    sdb,
    sd0,
    sd1,
    sd2,
    sdh,
    slb,
    sl0,
    sl1,
    sl2,
    slh,
    s_rh,
    s_r0,
    s_r1,
    s_r2,
    L0,
    L1,
    L2,
    KS0,
    KS1,
    KS2,
    DL0,
    DL1,
    DL2,
    ST0,
    ST1,
    ST2,
    NT1,
    NT2,
    G,
    QPK,
    qk_scale,
    scale,
    RANK: tl.constexpr,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    REL64: tl.constexpr,
    TMA: tl.constexpr,
    SCALE_FIRST: tl.constexpr,
    TMA_HOST: tl.constexpr = False,
    RES_TMA: tl.constexpr = False,
):
    """dq per query tile over its key box; no atomics. q/dq share strides, do uses sd*. ``TMA`` /
    ``TMA_HOST``: key and value tiles through descriptors, as in the forward; ``RES_TMA``: ``Q``/``DO``
    are host-built descriptors for the resident q and dO tiles (no staging through registers)."""
    BLOCK_Q: tl.constexpr = T0 * T1 * T2
    BLOCK_K: tl.constexpr = KB0 * KB1 * KB2
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hk = h // QPK
    grp = pid % G
    tile = pid // G
    g0, g1, g2, n0, n1, n2 = _group(grp, L0, L1, L2, DL0, DL1, DL2)
    qb0 = (tile // (NT1 * NT2)) * T0
    qb1 = ((tile // NT2) % NT1) * T1
    qb2 = (tile % NT2) * T2
    r0, r1, r2 = _box_rows(BLOCK_Q, T1, T2)
    qi0 = qb0 + r0
    qi1 = qb1 + r1
    qi2 = qb2 + r2
    qvalid = _rows_ok(qi0, qi1, qi2, n0, n1, n2, RANK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    x0 = g0 + qi0 * DL0
    x1 = g1 + qi1 * DL1
    x2 = g2 + qi2 * DL2
    hh = h.to(tl.int64)
    q_row = b * sqb + hh * sqh + _off(x0, x1, x2, 1, 1, 1, sq0, sq1, sq2, True)
    d_row = b * sdb + hh * sdh + _off(x0, x1, x2, 1, 1, 1, sd0, sd1, sd2, True)
    l_row = b * slb + hh * slh + _off(x0, x1, x2, 1, 1, 1, sl0, sl1, sl2, True)
    if RES_TMA:
        q = tl.reshape(Q.load([tl.program_id(2), qb0, qb1, qb2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
        do = tl.reshape(DO.load([tl.program_id(2), qb0, qb1, qb2, h * HEAD_DIM_V]), [BLOCK_Q, BLOCK_DV])
    else:
        q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
        dmask = _cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV)
        do = tl.load(DO + d_row[:, None] + offs_dv[None, :], mask=dmask, other=0.0)
    lse2 = tl.load(LSE + l_row, mask=qvalid, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + l_row, mask=qvalid, other=0.0)

    qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
    qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
    qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
    kl2, nk2, hi2, smax2, emin2 = _span(qb2, T2, n2, KS2, ST2, C2, KB2)
    kl1, nk1, hi1, smax1, emin1 = _span(qb1, T1, n1, KS1, ST1, C1, KB1)
    kl0, nk0, hi0, smax0, emin0 = _span(qb0, T0, n0, KS0, ST0, C0, KB0)
    tile_ok = (qb0 < n0) & (qb1 < n1) & (qb2 < n2)
    total = nk0 * nk1 * nk2 * tile_ok.to(tl.int32)

    c0, c1, c2 = _box_rows(BLOCK_K, KB1, KB2)
    if not TMA_HOST:
        k_base = K + b * skb + hk.to(tl.int64) * skh + _off(g0, g1, g2, 1, 1, 1, sk0, sk1, sk2, True)
        v_base = V + b * svb + hk.to(tl.int64) * svh + _off(g0, g1, g2, 1, 1, 1, sv0, sv1, sv2, True)
        if TMA:
            k_desc = _kv_descriptor(k_base, n0, n1, n2, DL0, DL1, DL2, sk0, sk1, sk2, KB0, KB1, KB2, HEAD_DIM, BLOCK_D)
            v_desc = _kv_descriptor(
                v_base, n0, n1, n2, DL0, DL1, DL2, sv0, sv1, sv2, KB0, KB1, KB2, HEAD_DIM_V, BLOCK_DV
            )
        else:
            k_rel = _off(c0, c1, c2, DL0, DL1, DL2, sk0, sk1, sk2, REL64)[:, None] + offs_d[None, :]
            v_rel = _off(c0, c1, c2, DL0, DL1, DL2, sv0, sv1, sv2, REL64)[:, None] + offs_dv[None, :]
    dq = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for t in range(0, total):
        i0, i1, i2 = _split(t, nk1, nk2, RANK)
        kb0 = kl0 + i0 * KB0
        kb1 = kl1 + i1 * KB1
        kb2 = kl2 + i2 * KB2
        kj0 = kb0 + c0
        kj1 = kb1 + c1
        kj2 = kb2 + c2
        kvalid = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
        if TMA_HOST:
            k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
            v = tl.reshape(V.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM_V]), [BLOCK_K, BLOCK_DV])
        elif TMA:
            k = tl.reshape(k_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_D])
            v = tl.reshape(v_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_DV])
        else:
            k = tl.load(
                k_base + _off(kb0, kb1, kb2, DL0, DL1, DL2, sk0, sk1, sk2, True) + k_rel,
                mask=_cols(kvalid, offs_d, HEAD_DIM, BLOCK_D),
                other=0.0,
            )
            v = tl.load(
                v_base + _off(kb0, kb1, kb2, DL0, DL1, DL2, sv0, sv1, sv2, True) + v_rel,
                mask=_cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
                other=0.0,
            )
        # both products first: dp's dot runs on the tensor cores while s is masked and exponentiated
        s = _dot(q, tl.trans(k), PREC)
        if SCALE_FIRST:
            s = s * qk_scale
        dp = _dot(do, tl.trans(v), PREC)
        if HAS_RPB:
            s += _bias(
                RPB,
                s_rh,
                s_r0,
                s_r1,
                s_r2,
                h,
                KS0,
                KS1,
                KS2,
                qi0[:, None],
                qi1[:, None],
                qi2[:, None],
                kj0[None, :],
                kj1[None, :],
                kj2[None, :],
                qvalid[:, None] & kvalid[None, :],
            )
        s = _mask_axis(s, kb2, KB2, smax2, emin2, kj2[None, :], qs2[:, None], qe2[:, None])
        if RANK >= 2:
            s = _mask_axis(s, kb1, KB1, smax1, emin1, kj1[None, :], qs1[:, None], qe1[:, None])
        if RANK >= 3:
            s = _mask_axis(s, kb0, KB0, smax0, emin0, kj0[None, :], qs0[:, None], qe0[:, None])
        if SCALE_FIRST:
            p = tl.exp2(s - lse2[:, None])
        else:  # the scale rides in one fused multiply-add (masked -inf stays -inf: the scale is > 0)
            p = tl.exp2(s * qk_scale - lse2[:, None])
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)
    dq = dq * scale
    tl.store(
        DQ + q_row[:, None] + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D)
    )


@triton.jit
def na_bwd_delta_kernel(
    DO,
    O,  # noqa: E741
    GLSE,
    DELTA,
    R,
    DV,
    HAS_GLSE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """delta = rowsum(dO * O) (- dLSE) in float32, for ``R`` contiguous rows of ``DV``: one read of each
    operand, where elementwise torch would materialize float32 copies of both."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_DV)
    rok = rows < R
    m = rok[:, None] & (cols < DV)[None, :]
    off = rows.to(tl.int64)[:, None] * DV + cols[None, :]
    do = tl.load(DO + off, mask=m, other=0.0).to(tl.float32)
    o = tl.load(O + off, mask=m, other=0.0).to(tl.float32)
    d = tl.sum(do * o, 1)
    if HAS_GLSE:
        d -= tl.load(GLSE + rows, mask=rok, other=0.0).to(tl.float32)
    tl.store(DELTA + rows, d, mask=rok)


@triton.jit
def _first_true_end(n, target, K, S, C: tl.constexpr, LOGN):
    """Smallest group-local query p in [0, n] whose window end exceeds ``target``."""
    lo = n * 0
    hi = n + 0
    for _ in range(0, LOGN):
        mid = (lo + hi) // 2
        _s, e = _window(mid, n, K, S, C)
        go = e > target
        active = lo < hi
        up = (active & go).to(tl.int32)
        dn = (active & (~go)).to(tl.int32)
        hi = hi + (mid - hi) * up
        lo = lo + (mid + 1 - lo) * dn
    return lo


@triton.jit
def _first_start_at_least(n, target, K, S, C: tl.constexpr, LOGN):
    """Smallest group-local query p in [0, n] whose window start is >= ``target``."""
    lo = n * 0
    hi = n + 0
    for _ in range(0, LOGN):
        mid = (lo + hi) // 2
        st, _e = _window(mid, n, K, S, C)
        go = st >= target
        active = lo < hi
        up = (active & go).to(tl.int32)
        dn = (active & (~go)).to(tl.int32)
        hi = hi + (mid - hi) * up
        lo = lo + (mid + 1 - lo) * dn
    return lo


@triton.jit
def _inverse(kb, KB: tl.constexpr, n, KS, ST, C: tl.constexpr, T: tl.constexpr, LOGN):
    """Queries whose window meets the key tile ``[kb, kb + KB)`` on one axis: first query, query tiles."""
    pl = _first_true_end(n, kb, KS, ST, C, LOGN)
    ph = _first_start_at_least(n, tl.minimum(kb + KB, n), KS, ST, C, LOGN)
    return pl, tl.maximum(ph - pl + T - 1, 0) // T


@triton.jit
def na_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    DQ,
    RPB,
    sqb,
    sq0,
    sq1,
    sq2,
    sqh,
    skb,
    sk0,
    sk1,
    sk2,
    skh,
    svb,
    sv0,
    sv1,
    sv2,
    svh,
    sdb,
    sd0,
    sd1,
    sd2,
    sdh,
    slb,
    sl0,
    sl1,
    sl2,
    slh,
    s_rh,
    s_r0,
    s_r1,
    s_r2,
    L0,
    L1,
    L2,
    KS0,
    KS1,
    KS2,
    DL0,
    DL1,
    DL2,
    ST0,
    ST1,
    ST2,
    NK1,
    NK2,
    G,
    QPK,
    qk_scale,
    scale,
    LOGN,
    RANK: tl.constexpr,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    REL64: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,
    SCALE_FIRST: tl.constexpr,
    TMA_HOST: tl.constexpr = False,
    RES_TMA: tl.constexpr = False,
):
    """dk/dv per key tile, accumulated over its inverse neighborhood (and the query heads that share
    its kv head): every key gradient is written once, by one program, in a fixed order.

    ``DQ_ATOMIC`` (KV parallelism, not deterministic): the same program also adds its share of dq
    (dS K) into the float32 ``DQ`` with atomics, so no separate dq pass recomputes P. q/DQ share strides.
    ``TMA_HOST`` (not with ``DQ_ATOMIC``): ``Q``/``DO`` are host-built descriptors, as K/V in the forward;
    the pointer path's per-element offset tiles of q and do take 64 registers at 32x128, which made
    this kernel spill. ``RES_TMA``: ``K``/``V`` are host-built descriptors for the resident key tile.
    """
    BLOCK_Q: tl.constexpr = T0 * T1 * T2
    BLOCK_K: tl.constexpr = KB0 * KB1 * KB2
    pid = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    grp = pid % G
    tile = pid // G
    g0, g1, g2, n0, n1, n2 = _group(grp, L0, L1, L2, DL0, DL1, DL2)
    kb0 = (tile // (NK1 * NK2)) * KB0
    kb1 = ((tile // NK2) % NK1) * KB1
    kb2 = (tile % NK2) * KB2
    c0, c1, c2 = _box_rows(BLOCK_K, KB1, KB2)
    kj0 = kb0 + c0
    kj1 = kb1 + c1
    kj2 = kb2 + c2
    kvalid = _rows_ok(kj0, kj1, kj2, n0, n1, n2, RANK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    y0 = g0 + kj0 * DL0
    y1 = g1 + kj1 * DL1
    y2 = g2 + kj2 * DL2
    k_row = b * skb + hk.to(tl.int64) * skh + _off(y0, y1, y2, 1, 1, 1, sk0, sk1, sk2, True)
    v_row = b * svb + hk.to(tl.int64) * svh + _off(y0, y1, y2, 1, 1, 1, sv0, sv1, sv2, True)
    kmask = _cols(kvalid, offs_d, HEAD_DIM, BLOCK_D)
    vmask = _cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV)
    if RES_TMA:
        k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
        v = tl.reshape(V.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM_V]), [BLOCK_K, BLOCK_DV])
    else:
        k = tl.load(K + k_row[:, None] + offs_d[None, :], mask=kmask, other=0.0)
        v = tl.load(V + v_row[:, None] + offs_dv[None, :], mask=vmask, other=0.0)

    # inverse neighborhood: query tiles (starting at the first query that sees the key tile)
    pl2, nq2 = _inverse(kb2, KB2, n2, KS2, ST2, C2, T2, LOGN)
    if RANK >= 2:
        pl1, nq1 = _inverse(kb1, KB1, n1, KS1, ST1, C1, T1, LOGN)
    else:
        pl1 = 0
        nq1 = 1
    if RANK >= 3:
        pl0, nq0 = _inverse(kb0, KB0, n0, KS0, ST0, C0, T0, LOGN)
    else:
        pl0 = 0
        nq0 = 1
    tile_ok = (kb0 < n0) & (kb1 < n1) & (kb2 < n2)
    ntiles = nq0 * nq1 * nq2
    total = ntiles * QPK * tile_ok.to(tl.int32)

    r0, r1, r2 = _box_rows(BLOCK_Q, T1, T2)
    if not TMA_HOST:
        q_grp = b * sqb + _off(g0, g1, g2, 1, 1, 1, sq0, sq1, sq2, True)
        d_base = DO + b * sdb + _off(g0, g1, g2, 1, 1, 1, sd0, sd1, sd2, True)
        q_rel = _off(r0, r1, r2, DL0, DL1, DL2, sq0, sq1, sq2, REL64)[:, None] + offs_d[None, :]
        d_rel = _off(r0, r1, r2, DL0, DL1, DL2, sd0, sd1, sd2, REL64)[:, None] + offs_dv[None, :]
    l_base = b * slb + _off(g0, g1, g2, 1, 1, 1, sl0, sl1, sl2, True)
    l_rel = _off(r0, r1, r2, DL0, DL1, DL2, sl0, sl1, sl2, REL64)
    dk = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_DV], tl.float32)
    for t in range(0, total):
        h = hk * QPK + t // ntiles
        hh = h.to(tl.int64)
        i0, i1, i2 = _split(t % ntiles, nq1, nq2, RANK)
        qb0 = pl0 + i0 * T0
        qb1 = pl1 + i1 * T1
        qb2 = pl2 + i2 * T2
        qi0 = qb0 + r0
        qi1 = qb1 + r1
        qi2 = qb2 + r2
        qvalid = _rows_ok(qi0, qi1, qi2, n0, n1, n2, RANK)
        l_off = l_base + hh * slh + _off(qb0, qb1, qb2, DL0, DL1, DL2, sl0, sl1, sl2, True)
        if TMA_HOST:
            q = tl.reshape(Q.load([tl.program_id(2), qb0, qb1, qb2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
            do = tl.reshape(DO.load([tl.program_id(2), qb0, qb1, qb2, h * HEAD_DIM_V]), [BLOCK_Q, BLOCK_DV])
        else:
            qmask = _cols(qvalid, offs_d, HEAD_DIM, BLOCK_D)
            q_off = hh * sqh + _off(qb0, qb1, qb2, DL0, DL1, DL2, sq0, sq1, sq2, True)
            d_off = hh * sdh + _off(qb0, qb1, qb2, DL0, DL1, DL2, sd0, sd1, sd2, True)
            q = tl.load(Q + q_grp + q_off + q_rel, mask=qmask, other=0.0)
            do = tl.load(d_base + d_off + d_rel, mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV), other=0.0)
        lse2 = tl.load(LSE + l_off + l_rel, mask=qvalid, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + l_off + l_rel, mask=qvalid, other=0.0)
        st = _dot(k, tl.trans(q), PREC)  # [BLOCK_K, BLOCK_Q]
        if SCALE_FIRST:
            st = st * qk_scale
        if HAS_RPB:
            st += _bias(
                RPB,
                s_rh,
                s_r0,
                s_r1,
                s_r2,
                h,
                KS0,
                KS1,
                KS2,
                qi0[None, :],
                qi1[None, :],
                qi2[None, :],
                kj0[:, None],
                kj1[:, None],
                kj2[:, None],
                kvalid[:, None] & qvalid[None, :],
            )
        # keys past the group need no mask of their own: a partially visited axis masks them (windows end
        # within the group) and a fully visited one has none
        st = _mask_inverse(st, kb2, KB2, qb2, T2, qi2, kj2, n2, KS2, ST2, C2)
        if RANK >= 2:
            st = _mask_inverse(st, kb1, KB1, qb1, T1, qi1, kj1, n1, KS1, ST1, C1)
        if RANK >= 3:
            st = _mask_inverse(st, kb0, KB0, qb0, T0, qi0, kj0, n0, KS0, ST0, C0)
        if SCALE_FIRST:
            pt = tl.exp2(st - lse2[None, :])
        else:  # the scale rides in one fused multiply-add (masked -inf stays -inf: the scale is > 0)
            pt = tl.exp2(st * qk_scale - lse2[None, :])
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PREC)
        dpt = _dot(v, tl.trans(do), PREC)  # after the exp: issued earlier, it held registers that spilled
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PREC)
        if DQ_ATOMIC:
            dq = _dot(tl.trans(dst.to(k.dtype)), k, PREC) * scale
            tl.atomic_add(DQ + q_grp + q_off + q_rel, dq, mask=qmask, sem="relaxed")
    dk = dk * scale
    tl.store(DK + k_row[:, None] + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kmask)
    tl.store(DV + v_row[:, None] + offs_dv[None, :], dv.to(DV.dtype.element_ty), mask=vmask)


@triton.jit
def na_bwd_drpb_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    RPB,
    DRPB,
    sqb,
    sq0,
    sq1,
    sq2,
    sqh,
    skb,
    sk0,
    sk1,
    sk2,
    skh,
    svb,
    sv0,
    sv1,
    sv2,
    svh,
    sdb,
    sd0,
    sd1,
    sd2,
    sdh,
    slb,
    sl0,
    sl1,
    sl2,
    slh,
    s_rh,
    s_r0,
    s_r1,
    s_r2,
    L0,
    L1,
    L2,
    KS0,
    KS1,
    KS2,
    DL0,
    DL1,
    DL2,
    ST0,
    ST1,
    ST2,
    NB,
    QPK,
    HEAD_DIM,
    HEAD_DIM_V,
    scale,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """drpb[h, r]: one program per (head, relative position), summing dS over batch and queries in a
    fixed order (deterministic, no atomics)."""
    ridx = tl.program_id(0)
    h = tl.program_id(1)
    hk = h // QPK
    R1 = 2 * KS1 - 1
    R2 = 2 * KS2 - 1
    i0 = ridx // (R1 * R2)
    i1 = (ridx // R2) % R1
    i2 = ridx % R2
    rel0 = i0 - (KS0 - 1)
    rel1 = i1 - (KS1 - 1)
    rel2 = i2 - (KS2 - 1)
    bias = tl.load(RPB + h * s_rh + i0 * s_r0 + i1 * s_r1 + i2 * s_r2).to(tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dmask = offs_d < HEAD_DIM
    dvmask = offs_dv < HEAD_DIM_V
    N = L0 * L1 * L2
    acc = tl.zeros([BLOCK_T], tl.float32)
    hh = h.to(tl.int64)
    hkk = hk.to(tl.int64)
    for bi in range(0, NB):
        b = tl.cast(bi, tl.int64)
        for start in range(0, N, BLOCK_T):
            i = start + tl.arange(0, BLOCK_T)
            x0 = i // (L1 * L2)
            x1 = (i // L2) % L1
            x2 = i % L2
            p0 = x0 // DL0
            p1 = x1 // DL1
            p2 = x2 // DL2
            gg0 = x0 % DL0
            gg1 = x1 % DL1
            gg2 = x2 % DL2
            n0 = (L0 - gg0 + DL0 - 1) // DL0
            n1 = (L1 - gg1 + DL1 - 1) // DL1
            n2 = (L2 - gg2 + DL2 - 1) // DL2
            s0, e0 = _window(p0, n0, KS0, ST0, False)
            s1, e1 = _window(p1, n1, KS1, ST1, False)
            s2, e2 = _window(p2, n2, KS2, ST2, False)
            j0 = p0 + rel0
            j1 = p1 + rel1
            j2 = p2 + rel2
            valid = (i < N) & (j0 >= s0) & (j0 < e0) & (j1 >= s1) & (j1 < e1) & (j2 >= s2) & (j2 < e2)
            y0 = (gg0 + j0 * DL0).to(tl.int64)
            y1 = (gg1 + j1 * DL1).to(tl.int64)
            y2 = (gg2 + j2 * DL2).to(tl.int64)
            xq0 = x0.to(tl.int64)
            xq1 = x1.to(tl.int64)
            xq2 = x2.to(tl.int64)
            q_row = b * sqb + xq0 * sq0 + xq1 * sq1 + xq2 * sq2 + hh * sqh
            d_row = b * sdb + xq0 * sd0 + xq1 * sd1 + xq2 * sd2 + hh * sdh
            l_row = b * slb + xq0 * sl0 + xq1 * sl1 + xq2 * sl2 + hh * slh
            k_row = b * skb + y0 * sk0 + y1 * sk1 + y2 * sk2 + hkk * skh
            v_row = b * svb + y0 * sv0 + y1 * sv1 + y2 * sv2 + hkk * svh
            m = valid[:, None] & dmask[None, :]
            mv = valid[:, None] & dvmask[None, :]
            q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
            k = tl.load(K + k_row[:, None] + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
            do = tl.load(DO + d_row[:, None] + offs_dv[None, :], mask=mv, other=0.0).to(tl.float32)
            v = tl.load(V + v_row[:, None] + offs_dv[None, :], mask=mv, other=0.0).to(tl.float32)
            lse = tl.load(LSE + l_row, mask=valid, other=0.0)
            delta = tl.load(DELTA + l_row, mask=valid, other=0.0)
            s = tl.sum(q * k, 1) * scale + bias
            p = tl.exp(s - lse)
            dp = tl.sum(do * v, 1)
            acc += tl.where(valid, p * (dp - delta), 0.0)
    tl.store(DRPB + h * (R1 * R2 * (2 * KS0 - 1)) + ridx, tl.sum(acc, 0))
