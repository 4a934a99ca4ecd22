"""Triton kernels for fused neighborhood attention (rank-3 internal view, heads-last layout).

Geometry shared by every kernel (see docs/internals.md and design.md section 3):

* The problem is rank 3; 1D/2D problems arrive with leading unit axes (kernel 1, stride 1).
* Dilation is handled by partitioning: a program works inside one dilation group ``(g0, g1, g2)``;
  group-local coordinate ``p`` maps to the token ``g + p * d`` (strided addressing, never a copy).
* A query tile is a box ``T0 x T1 x T2`` of group-local coordinates; flattened to ``BLOCK_Q`` rows.
  Its keys are the union of its windows, a haloed box ``[lo, hi)`` per axis (windows are monotonic
  in the query coordinate, so the box comes from the first and last query of the tile).
  Key tiles are boxes ``K0 x K1 x K2`` that tile that halo box; nothing outside it is loaded.
* A key tile is *full* when every query of the tile attends every key of it (per axis: the latest
  window start is at or before the tile and the earliest window end at or after it). Full tiles
  take a branch with no mask at all; only partially visited tiles compute the mask.
* Softmax runs in base 2 (``exp2``) with ``scale * log2(e)`` folded into the logits.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


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
    HEAD_DIM,
    HEAD_DIM_V,
    qk_scale,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
):
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
    qvalid = (qi0 < n0) & (qi1 < n1) & (qi2 < n2)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dmask = offs_d < HEAD_DIM
    dvmask = offs_dv < HEAD_DIM_V

    q_row = (
        b * sqb
        + (g0 + qi0 * DL0).to(tl.int64) * sq0
        + (g1 + qi1 * DL1).to(tl.int64) * sq1
        + (g2 + qi2 * DL2).to(tl.int64) * sq2
        + h.to(tl.int64) * sqh
    )
    q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=qvalid[:, None] & dmask[None, :], other=0.0)

    # per-query windows (only used on partial tiles) and the tile's scalar bounds
    qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
    qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
    qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
    last0 = tl.minimum(qb0 + T0, n0) - 1
    last1 = tl.minimum(qb1 + T1, n1) - 1
    last2 = tl.minimum(qb2 + T2, n2) - 1
    lo0, emin0 = _window(qb0, n0, KS0, ST0, C0)
    lo1, emin1 = _window(qb1, n1, KS1, ST1, C1)
    lo2, emin2 = _window(qb2, n2, KS2, ST2, C2)
    smax0, hi0 = _window(last0, n0, KS0, ST0, C0)
    smax1, hi1 = _window(last1, n1, KS1, ST1, C1)
    smax2, hi2 = _window(last2, n2, KS2, ST2, C2)
    nk0 = (hi0 - lo0 + KB0 - 1) // KB0
    nk1 = (hi1 - lo1 + KB1 - 1) // KB1
    nk2 = (hi2 - lo2 + KB2 - 1) // KB2
    tile_ok = (qb0 < n0) & (qb1 < n1) & (qb2 < n2)
    total = nk0 * nk1 * nk2 * tile_ok.to(tl.int32)

    c0, c1, c2 = _box_rows(BLOCK_K, KB1, KB2)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    k_base = K + b * skb + hk.to(tl.int64) * skh
    v_base = V + b * svb + hk.to(tl.int64) * svh

    for t in range(0, total):
        kb0 = lo0 + (t // (nk1 * nk2)) * KB0
        kb1 = lo1 + ((t // nk2) % nk1) * KB1
        kb2 = lo2 + (t % nk2) * KB2
        kj0 = kb0 + c0
        kj1 = kb1 + c1
        kj2 = kb2 + c2
        kvalid = (kj0 < hi0) & (kj1 < hi1) & (kj2 < hi2)
        k_row = (
            (g0 + kj0 * DL0).to(tl.int64) * sk0
            + (g1 + kj1 * DL1).to(tl.int64) * sk1
            + (g2 + kj2 * DL2).to(tl.int64) * sk2
        )
        v_row = (
            (g0 + kj0 * DL0).to(tl.int64) * sv0
            + (g1 + kj1 * DL1).to(tl.int64) * sv1
            + (g2 + kj2 * DL2).to(tl.int64) * sv2
        )
        k = tl.load(k_base + k_row[:, None] + offs_d[None, :], mask=kvalid[:, None] & dmask[None, :], other=0.0)
        s = _dot(q, tl.trans(k), PREC) * qk_scale
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
        full = (
            (smax0 <= kb0)
            & (kb0 + KB0 <= emin0)
            & (smax1 <= kb1)
            & (kb1 + KB1 <= emin1)
            & (smax2 <= kb2)
            & (kb2 + KB2 <= emin2)
        )
        if not full:
            inwin = (
                (kj0[None, :] >= qs0[:, None])
                & (kj0[None, :] < qe0[:, None])
                & (kj1[None, :] >= qs1[:, None])
                & (kj1[None, :] < qe1[:, None])
                & (kj2[None, :] >= qs2[:, None])
                & (kj2[None, :] < qe2[:, None])
            )
            s = tl.where(inwin, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + v_row[:, None] + offs_dv[None, :], mask=kvalid[:, None] & dvmask[None, :], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_row = (
        b * sob
        + (g0 + qi0 * DL0).to(tl.int64) * so0
        + (g1 + qi1 * DL1).to(tl.int64) * so1
        + (g2 + qi2 * DL2).to(tl.int64) * so2
        + h.to(tl.int64) * soh
    )
    tl.store(O + o_row[:, None] + offs_dv[None, :], out.to(O.dtype.element_ty), mask=qvalid[:, None] & dvmask[None, :])
    lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
    l_row = (
        b * slb
        + (g0 + qi0 * DL0).to(tl.int64) * sl0
        + (g1 + qi1 * DL1).to(tl.int64) * sl1
        + (g2 + qi2 * DL2).to(tl.int64) * sl2
        + h.to(tl.int64) * slh
    )
    tl.store(LSE + l_row, lse, mask=qvalid)


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
    HEAD_DIM,
    HEAD_DIM_V,
    qk_scale,
    scale,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
):
    """dq per query tile over its key box; no atomics. q/dq share strides, do uses sd*."""
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
    qvalid = (qi0 < n0) & (qi1 < n1) & (qi2 < n2)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dmask = offs_d < HEAD_DIM
    dvmask = offs_dv < HEAD_DIM_V
    x0 = (g0 + qi0 * DL0).to(tl.int64)
    x1 = (g1 + qi1 * DL1).to(tl.int64)
    x2 = (g2 + qi2 * DL2).to(tl.int64)
    q_row = b * sqb + x0 * sq0 + x1 * sq1 + x2 * sq2 + h.to(tl.int64) * sqh
    d_row = b * sdb + x0 * sd0 + x1 * sd1 + x2 * sd2 + h.to(tl.int64) * sdh
    l_row = b * slb + x0 * sl0 + x1 * sl1 + x2 * sl2 + h.to(tl.int64) * slh
    q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=qvalid[:, None] & dmask[None, :], other=0.0)
    do = tl.load(DO + d_row[:, None] + offs_dv[None, :], mask=qvalid[:, None] & dvmask[None, :], other=0.0)
    lse2 = tl.load(LSE + l_row, mask=qvalid, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + l_row, mask=qvalid, other=0.0)

    qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
    qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
    qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
    last0 = tl.minimum(qb0 + T0, n0) - 1
    last1 = tl.minimum(qb1 + T1, n1) - 1
    last2 = tl.minimum(qb2 + T2, n2) - 1
    lo0, emin0 = _window(qb0, n0, KS0, ST0, C0)
    lo1, emin1 = _window(qb1, n1, KS1, ST1, C1)
    lo2, emin2 = _window(qb2, n2, KS2, ST2, C2)
    smax0, hi0 = _window(last0, n0, KS0, ST0, C0)
    smax1, hi1 = _window(last1, n1, KS1, ST1, C1)
    smax2, hi2 = _window(last2, n2, KS2, ST2, C2)
    nk0 = (hi0 - lo0 + KB0 - 1) // KB0
    nk1 = (hi1 - lo1 + KB1 - 1) // KB1
    nk2 = (hi2 - lo2 + KB2 - 1) // KB2
    tile_ok = (qb0 < n0) & (qb1 < n1) & (qb2 < n2)
    total = nk0 * nk1 * nk2 * tile_ok.to(tl.int32)

    c0, c1, c2 = _box_rows(BLOCK_K, KB1, KB2)
    dq = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    k_base = K + b * skb + hk.to(tl.int64) * skh
    v_base = V + b * svb + hk.to(tl.int64) * svh
    for t in range(0, total):
        kb0 = lo0 + (t // (nk1 * nk2)) * KB0
        kb1 = lo1 + ((t // nk2) % nk1) * KB1
        kb2 = lo2 + (t % nk2) * KB2
        kj0 = kb0 + c0
        kj1 = kb1 + c1
        kj2 = kb2 + c2
        kvalid = (kj0 < hi0) & (kj1 < hi1) & (kj2 < hi2)
        y0 = (g0 + kj0 * DL0).to(tl.int64)
        y1 = (g1 + kj1 * DL1).to(tl.int64)
        y2 = (g2 + kj2 * DL2).to(tl.int64)
        k = tl.load(
            k_base + (y0 * sk0 + y1 * sk1 + y2 * sk2)[:, None] + offs_d[None, :],
            mask=kvalid[:, None] & dmask[None, :],
            other=0.0,
        )
        v = tl.load(
            v_base + (y0 * sv0 + y1 * sv1 + y2 * sv2)[:, None] + offs_dv[None, :],
            mask=kvalid[:, None] & dvmask[None, :],
            other=0.0,
        )
        s = _dot(q, tl.trans(k), PREC) * qk_scale
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
        full = (
            (smax0 <= kb0)
            & (kb0 + KB0 <= emin0)
            & (smax1 <= kb1)
            & (kb1 + KB1 <= emin1)
            & (smax2 <= kb2)
            & (kb2 + KB2 <= emin2)
        )
        if not full:
            inwin = (
                (kj0[None, :] >= qs0[:, None])
                & (kj0[None, :] < qe0[:, None])
                & (kj1[None, :] >= qs1[:, None])
                & (kj1[None, :] < qe1[:, None])
                & (kj2[None, :] >= qs2[:, None])
                & (kj2[None, :] < qe2[:, None])
            )
            s = tl.where(inwin, s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = _dot(do, tl.trans(v), PREC)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PREC)
    dq = dq * scale
    tl.store(DQ + q_row[:, None] + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=qvalid[:, None] & dmask[None, :])


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
def na_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
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
    HEAD_DIM,
    HEAD_DIM_V,
    qk_scale,
    scale,
    LOGN,
    C0: tl.constexpr,
    C1: tl.constexpr,
    C2: tl.constexpr,
    T0: tl.constexpr,
    T1: tl.constexpr,
    T2: tl.constexpr,
    KB0: tl.constexpr,
    KB1: tl.constexpr,
    KB2: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
):
    """dk/dv per key tile, accumulated over its inverse neighborhood (and the query heads that share
    its kv head): every key gradient is written once, by one program, in a fixed order."""
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
    kvalid = (kj0 < n0) & (kj1 < n1) & (kj2 < n2)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dmask = offs_d < HEAD_DIM
    dvmask = offs_dv < HEAD_DIM_V
    y0 = (g0 + kj0 * DL0).to(tl.int64)
    y1 = (g1 + kj1 * DL1).to(tl.int64)
    y2 = (g2 + kj2 * DL2).to(tl.int64)
    k_row = b * skb + y0 * sk0 + y1 * sk1 + y2 * sk2 + hk.to(tl.int64) * skh
    v_row = b * svb + y0 * sv0 + y1 * sv1 + y2 * sv2 + hk.to(tl.int64) * svh
    k = tl.load(K + k_row[:, None] + offs_d[None, :], mask=kvalid[:, None] & dmask[None, :], other=0.0)
    v = tl.load(V + v_row[:, None] + offs_dv[None, :], mask=kvalid[:, None] & dvmask[None, :], other=0.0)

    # inverse neighborhood: queries whose window meets [kb, min(kb + KB, n)) on every axis
    kend0 = tl.minimum(kb0 + KB0, n0)
    kend1 = tl.minimum(kb1 + KB1, n1)
    kend2 = tl.minimum(kb2 + KB2, n2)
    pl0 = _first_true_end(n0, kb0, KS0, ST0, C0, LOGN)
    pl1 = _first_true_end(n1, kb1, KS1, ST1, C1, LOGN)
    pl2 = _first_true_end(n2, kb2, KS2, ST2, C2, LOGN)
    ph0 = _first_start_at_least(n0, kend0, KS0, ST0, C0, LOGN)
    ph1 = _first_start_at_least(n1, kend1, KS1, ST1, C1, LOGN)
    ph2 = _first_start_at_least(n2, kend2, KS2, ST2, C2, LOGN)
    nq0 = tl.maximum(ph0 - pl0 + T0 - 1, 0) // T0
    nq1 = tl.maximum(ph1 - pl1 + T1 - 1, 0) // T1
    nq2 = tl.maximum(ph2 - pl2 + T2 - 1, 0) // T2
    tile_ok = (kb0 < n0) & (kb1 < n1) & (kb2 < n2)
    ntiles = nq0 * nq1 * nq2
    total = ntiles * QPK * tile_ok.to(tl.int32)

    r0, r1, r2 = _box_rows(BLOCK_Q, T1, T2)
    dk = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_DV], tl.float32)
    for t in range(0, total):
        h = hk * QPK + t // ntiles
        tq = t % ntiles
        qb0 = pl0 + (tq // (nq1 * nq2)) * T0
        qb1 = pl1 + ((tq // nq2) % nq1) * T1
        qb2 = pl2 + (tq % nq2) * T2
        qi0 = qb0 + r0
        qi1 = qb1 + r1
        qi2 = qb2 + r2
        qvalid = (qi0 < n0) & (qi1 < n1) & (qi2 < n2)
        x0 = (g0 + qi0 * DL0).to(tl.int64)
        x1 = (g1 + qi1 * DL1).to(tl.int64)
        x2 = (g2 + qi2 * DL2).to(tl.int64)
        hh = h.to(tl.int64)
        q_row = b * sqb + x0 * sq0 + x1 * sq1 + x2 * sq2 + hh * sqh
        d_row = b * sdb + x0 * sd0 + x1 * sd1 + x2 * sd2 + hh * sdh
        l_row = b * slb + x0 * sl0 + x1 * sl1 + x2 * sl2 + hh * slh
        q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=qvalid[:, None] & dmask[None, :], other=0.0)
        do = tl.load(DO + d_row[:, None] + offs_dv[None, :], mask=qvalid[:, None] & dvmask[None, :], other=0.0)
        lse2 = tl.load(LSE + l_row, mask=qvalid, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + l_row, mask=qvalid, other=0.0)
        st = _dot(k, tl.trans(q), PREC) * qk_scale  # [BLOCK_K, BLOCK_Q]
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
        last0 = tl.minimum(qb0 + T0, n0) - 1
        last1 = tl.minimum(qb1 + T1, n1) - 1
        last2 = tl.minimum(qb2 + T2, n2) - 1
        _a0, emin0 = _window(qb0, n0, KS0, ST0, C0)
        _a1, emin1 = _window(qb1, n1, KS1, ST1, C1)
        _a2, emin2 = _window(qb2, n2, KS2, ST2, C2)
        smax0, _b0 = _window(last0, n0, KS0, ST0, C0)
        smax1, _b1 = _window(last1, n1, KS1, ST1, C1)
        smax2, _b2 = _window(last2, n2, KS2, ST2, C2)
        full = (
            (smax0 <= kb0)
            & (kb0 + KB0 <= emin0)
            & (smax1 <= kb1)
            & (kb1 + KB1 <= emin1)
            & (smax2 <= kb2)
            & (kb2 + KB2 <= emin2)
        )
        if not full:
            qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
            qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
            qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
            inwin = (
                (kj0[:, None] >= qs0[None, :])
                & (kj0[:, None] < qe0[None, :])
                & (kj1[:, None] >= qs1[None, :])
                & (kj1[:, None] < qe1[None, :])
                & (kj2[:, None] >= qs2[None, :])
                & (kj2[:, None] < qe2[None, :])
                & kvalid[:, None]
            )
            st = tl.where(inwin, st, float("-inf"))
        pt = tl.exp2(st - lse2[None, :])
        dv += _dot(pt.to(do.dtype), do, PREC)
        dpt = _dot(v, tl.trans(do), PREC)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, PREC)
    dk = dk * scale
    tl.store(DK + k_row[:, None] + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kvalid[:, None] & dmask[None, :])
    tl.store(DV + v_row[:, None] + offs_dv[None, :], dv.to(DV.dtype.element_ty), mask=kvalid[:, None] & dvmask[None, :])


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
