"""The fused backward kernels: delta, dq per query tile, dk/dv per key tile over its inverse
neighborhood, drpb per (head, relative position) (geometry: fused_geometry.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import (
    _bias,
    _box_rows,
    _cols,
    _dot,
    _inverse,
    _key_box,
    _kv_descriptor,
    _mask_box,
    _mask_inverse,
    _off,
    _rows_ok,
    _windows,
)
from natten_kernels.triton.prologue import _box_queries, _program_box, _query_box, _query_origin, _tile_at
from natten_kernels.triton.rpb_pairs import _rel_pairs, _rel_position


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
    sq,
    sk,
    sv,
    sd,
    sl,
    s_r,
    GEO,
    NT1,
    NT2,
    G,
    QPK,
    qk_scale,
    scale,
    QBOX,
    RANK: tl.constexpr,
    C: tl.constexpr,
    T: tl.constexpr,
    KB: tl.constexpr,
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
    SUB: tl.constexpr = False,
):
    """dq per query tile over its key box; no atomics. q/dq share strides, do uses sd*; ``GEO`` as in the
    forward. ``TMA`` / ``TMA_HOST``: key and value tiles through descriptors, as in the forward;
    ``RES_TMA``: ``Q``/``DO`` are host-built descriptors for the resident q and dO tiles (no staging
    through registers). ``SUB``: the query tensors hold the box ``QBOX`` of the key grid (forward)."""
    L, KS, DL, ST = GEO
    BLOCK_Q: tl.constexpr = T[0] * T[1] * T[2]
    BLOCK_K: tl.constexpr = KB[0] * KB[1] * KB[2]
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hk = h // QPK
    g0, g1, g2, n0, n1, n2, qb0, qb1, qb2, qi0, qi1, qi2, qvalid, e0, e1, e2 = _query_box(
        pid, G, L, DL, NT1, NT2, T, RANK, QBOX, SUB
    )
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    x0, x1, x2 = _query_origin(g0 + qi0 * DL[0], g1 + qi1 * DL[1], g2 + qi2 * DL[2], QBOX, SUB)
    hh = h.to(tl.int64)
    q_row = b * sq[0] + hh * sq[4] + _off(x0, x1, x2, (1, 1, 1), sq, True)
    d_row = b * sd[0] + hh * sd[4] + _off(x0, x1, x2, (1, 1, 1), sd, True)
    l_row = b * sl[0] + hh * sl[4] + _off(x0, x1, x2, (1, 1, 1), sl, True)
    if RES_TMA:  # no dilation: the group is the grid
        t0, t1, t2 = _query_origin(qb0, qb1, qb2, QBOX, SUB)
        q = tl.reshape(Q.load([tl.program_id(2), t0, t1, t2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
        do = tl.reshape(DO.load([tl.program_id(2), t0, t1, t2, h * HEAD_DIM_V]), [BLOCK_Q, BLOCK_DV])
    else:
        q = tl.load(Q + q_row[:, None] + offs_d[None, :], mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
        dmask = _cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV)
        do = tl.load(DO + d_row[:, None] + offs_dv[None, :], mask=dmask, other=0.0)
    lse2 = tl.load(LSE + l_row, mask=qvalid, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + l_row, mask=qvalid, other=0.0)

    qs0, qe0, qs1, qe1, qs2, qe2 = _windows(qi0, qi1, qi2, n0, n1, n2, KS, ST, C)
    kl0, kl1, kl2, nk1, nk2, hi0, hi1, hi2, smax0, smax1, smax2, emin0, emin1, emin2, total = _key_box(
        qb0, qb1, qb2, n0, n1, n2, e0, e1, e2, KS, ST, C, T, KB
    )

    c0, c1, c2 = _box_rows(BLOCK_K, KB[1], KB[2])
    if not TMA_HOST:
        k_base = K + b * sk[0] + hk.to(tl.int64) * sk[4] + _off(g0, g1, g2, (1, 1, 1), sk, True)
        v_base = V + b * sv[0] + hk.to(tl.int64) * sv[4] + _off(g0, g1, g2, (1, 1, 1), sv, True)
        if TMA:
            k_desc = _kv_descriptor(k_base, n0, n1, n2, DL, sk, KB, HEAD_DIM, BLOCK_D)
            v_desc = _kv_descriptor(v_base, n0, n1, n2, DL, sv, KB, HEAD_DIM_V, BLOCK_DV)
        else:
            k_rel = _off(c0, c1, c2, DL, sk, REL64)[:, None] + offs_d[None, :]
            v_rel = _off(c0, c1, c2, DL, sv, REL64)[:, None] + offs_dv[None, :]
    dq = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for t in range(0, total):
        kb0, kb1, kb2, kj0, kj1, kj2 = _tile_at(t, kl0, kl1, kl2, nk1, nk2, c0, c1, c2, KB, RANK)
        kvalid = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
        if TMA_HOST:
            k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
            v = tl.reshape(V.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM_V]), [BLOCK_K, BLOCK_DV])
        elif TMA:
            k = tl.reshape(k_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_D])
            v = tl.reshape(v_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_DV])
        else:
            k = tl.load(
                k_base + _off(kb0, kb1, kb2, DL, sk, True) + k_rel,
                mask=_cols(kvalid, offs_d, HEAD_DIM, BLOCK_D),
                other=0.0,
            )
            v = tl.load(
                v_base + _off(kb0, kb1, kb2, DL, sv, True) + v_rel,
                mask=_cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
                other=0.0,
            )
        # both products first: dp's dot runs on the tensor cores while s is masked and exponentiated
        s = _dot(q, tl.trans(k), PREC)
        if SCALE_FIRST:
            s = s * qk_scale
        dp = _dot(do, tl.trans(v), PREC)
        if HAS_RPB:
            s += _bias(RPB, s_r, h, KS, qi0, qi1, qi2, qvalid, kj0, kj1, kj2, kvalid, False)
        s = _mask_box(
            s, kb0, kb1, kb2, KB, smax0, smax1, smax2, emin0, emin1, emin2, kj0, kj1, kj2,
            qs0, qe0, qs1, qe1, qs2, qe2, RANK,
        )  # fmt: skip
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
    sq,
    sk,
    sv,
    sd,
    sl,
    s_r,
    GEO,
    NK1,
    NK2,
    G,
    QPK,
    qk_scale,
    scale,
    LOGN,
    QBOX,
    RANK: tl.constexpr,
    C: tl.constexpr,
    T: tl.constexpr,
    KB: tl.constexpr,
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
    SUB: tl.constexpr = False,
):
    """dk/dv per key tile, accumulated over its inverse neighborhood (and the query heads that share
    its kv head): every key gradient is written once, by one program, in a fixed order.

    ``DQ_ATOMIC`` (KV parallelism, not deterministic): the same program also adds its share of dq
    (dS K) into the float32 ``DQ`` with atomics, so no separate dq pass recomputes P. q/DQ share strides.
    ``TMA_HOST`` (not with ``DQ_ATOMIC``): ``Q``/``DO`` are host-built descriptors, as K/V in the forward;
    the pointer path's per-element offset tiles of q and do take 64 registers at 32x128, which made
    this kernel spill. ``RES_TMA``: ``K``/``V`` are host-built descriptors for the resident key tile.
    ``SUB``: the query tensors hold the box ``QBOX`` of the key grid; only its queries are visited.
    """
    L, KS, DL, ST = GEO
    BLOCK_Q: tl.constexpr = T[0] * T[1] * T[2]
    BLOCK_K: tl.constexpr = KB[0] * KB[1] * KB[2]
    pid = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    g0, g1, g2, n0, n1, n2, kb0, kb1, kb2, kj0, kj1, kj2, kvalid = _program_box(pid, G, L, DL, NK1, NK2, KB, RANK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    y0 = g0 + kj0 * DL[0]
    y1 = g1 + kj1 * DL[1]
    y2 = g2 + kj2 * DL[2]
    k_row = b * sk[0] + hk.to(tl.int64) * sk[4] + _off(y0, y1, y2, (1, 1, 1), sk, True)
    v_row = b * sv[0] + hk.to(tl.int64) * sv[4] + _off(y0, y1, y2, (1, 1, 1), sv, True)
    kmask = _cols(kvalid, offs_d, HEAD_DIM, BLOCK_D)
    vmask = _cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV)
    if RES_TMA:
        k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
        v = tl.reshape(V.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM_V]), [BLOCK_K, BLOCK_DV])
    else:
        k = tl.load(K + k_row[:, None] + offs_d[None, :], mask=kmask, other=0.0)
        v = tl.load(V + v_row[:, None] + offs_dv[None, :], mask=vmask, other=0.0)

    # inverse neighborhood: query tiles (starting at the first query that sees the key tile)
    if SUB:
        qs0, qe0, qs1, qe1, qs2, qe2 = _box_queries(g0, g1, g2, DL, QBOX)
    else:
        qs0, qe0, qs1, qe1, qs2, qe2 = 0, n0, 0, n1, 0, n2
    pl2, nq2 = _inverse(kb2, KB[2], n2, KS[2], ST[2], C[2], T[2], LOGN, qs2, qe2, SUB)
    if RANK >= 2:
        pl1, nq1 = _inverse(kb1, KB[1], n1, KS[1], ST[1], C[1], T[1], LOGN, qs1, qe1, SUB)
    else:
        pl1 = 0
        nq1 = 1
    if RANK >= 3:
        pl0, nq0 = _inverse(kb0, KB[0], n0, KS[0], ST[0], C[0], T[0], LOGN, qs0, qe0, SUB)
    else:
        pl0 = 0
        nq0 = 1
    tile_ok = (kb0 < n0) & (kb1 < n1) & (kb2 < n2)
    ntiles = nq0 * nq1 * nq2
    total = ntiles * QPK * tile_ok.to(tl.int32)

    r0, r1, r2 = _box_rows(BLOCK_Q, T[1], T[2])
    x0, x1, x2 = _query_origin(g0, g1, g2, QBOX, SUB)  # the group's origin in the query tensors
    if not TMA_HOST:
        q_grp = b * sq[0] + _off(x0, x1, x2, (1, 1, 1), sq, True)
        d_base = DO + b * sd[0] + _off(x0, x1, x2, (1, 1, 1), sd, True)
        q_rel = _off(r0, r1, r2, DL, sq, REL64)[:, None] + offs_d[None, :]
        d_rel = _off(r0, r1, r2, DL, sd, REL64)[:, None] + offs_dv[None, :]
    l_base = b * sl[0] + _off(x0, x1, x2, (1, 1, 1), sl, True)
    l_rel = _off(r0, r1, r2, DL, sl, REL64)
    dk = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_DV], tl.float32)
    for t in range(0, total):
        h = hk * QPK + t // ntiles
        hh = h.to(tl.int64)
        qb0, qb1, qb2, qi0, qi1, qi2 = _tile_at(t % ntiles, pl0, pl1, pl2, nq1, nq2, r0, r1, r2, T, RANK)
        qvalid = _rows_ok(qi0, qi1, qi2, qe0, qe1, qe2, RANK)
        l_off = l_base + hh * sl[4] + _off(qb0, qb1, qb2, DL, sl, True)
        if TMA_HOST:  # no dilation: the group is the grid
            t0, t1, t2 = _query_origin(qb0, qb1, qb2, QBOX, SUB)
            q = tl.reshape(Q.load([tl.program_id(2), t0, t1, t2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
            do = tl.reshape(DO.load([tl.program_id(2), t0, t1, t2, h * HEAD_DIM_V]), [BLOCK_Q, BLOCK_DV])
        else:
            qmask = _cols(qvalid, offs_d, HEAD_DIM, BLOCK_D)
            q_off = hh * sq[4] + _off(qb0, qb1, qb2, DL, sq, True)
            d_off = hh * sd[4] + _off(qb0, qb1, qb2, DL, sd, True)
            q = tl.load(Q + q_grp + q_off + q_rel, mask=qmask, other=0.0)
            do = tl.load(d_base + d_off + d_rel, mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV), other=0.0)
        lse2 = tl.load(LSE + l_off + l_rel, mask=qvalid, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + l_off + l_rel, mask=qvalid, other=0.0)
        st = _dot(k, tl.trans(q), PREC)  # [BLOCK_K, BLOCK_Q]
        if SCALE_FIRST:
            st = st * qk_scale
        if HAS_RPB:
            st += _bias(RPB, s_r, h, KS, qi0, qi1, qi2, qvalid, kj0, kj1, kj2, kvalid, True)
        # keys past the group need no mask of their own: a partially visited axis masks them (windows end
        # within the group) and a fully visited one has none
        st = _mask_inverse(st, kb2, KB[2], qb2, T[2], qi2, kj2, n2, KS[2], ST[2], C[2])
        if RANK >= 2:
            st = _mask_inverse(st, kb1, KB[1], qb1, T[1], qi1, kj1, n1, KS[1], ST[1], C[1])
        if RANK >= 3:
            st = _mask_inverse(st, kb0, KB[0], qb0, T[0], qi0, kj0, n0, KS[0], ST[0], C[0])
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
    sq,
    sk,
    sv,
    sd,
    sl,
    s_r,
    GEO,
    NB,
    QPK,
    HEAD_DIM,
    HEAD_DIM_V,
    scale,
    QBOX,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    SUB: tl.constexpr = False,
):
    """drpb[h, r]: one program per (head, relative position), summing dS over batch and queries in a
    fixed order (deterministic, no atomics). ``SUB``: the queries are the box ``QBOX`` of the key grid."""
    L, KS, DL, ST = GEO
    if SUB:
        QO, QL = QBOX
    else:
        QO = (0, 0, 0)
        QL = L
    ridx = tl.program_id(0)
    h = tl.program_id(1)
    hk = h // QPK
    i0, i1, i2, rel0, rel1, rel2 = _rel_position(ridx, KS)
    bias = tl.load(RPB + h * s_r[0] + i0 * s_r[1] + i1 * s_r[2] + i2 * s_r[3]).to(tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dmask = offs_d < HEAD_DIM
    dvmask = offs_dv < HEAD_DIM_V
    N = QL[0] * QL[1] * QL[2]
    acc = tl.zeros([BLOCK_T], tl.float32)
    hh = h.to(tl.int64)
    hkk = hk.to(tl.int64)
    for bi in range(0, NB):
        b = tl.cast(bi, tl.int64)
        for start in range(0, N, BLOCK_T):
            i = start + tl.arange(0, BLOCK_T)
            x0, x1, x2, gg0, gg1, gg2, j0, j1, j2, _s0, _s1, _s2, valid = _rel_pairs(
                i, N, L, DL, KS, ST, rel0, rel1, rel2, QO, QL
            )
            y0 = (gg0 + j0 * DL[0]).to(tl.int64)
            y1 = (gg1 + j1 * DL[1]).to(tl.int64)
            y2 = (gg2 + j2 * DL[2]).to(tl.int64)
            xq0 = (x0 - QO[0]).to(tl.int64)
            xq1 = (x1 - QO[1]).to(tl.int64)
            xq2 = (x2 - QO[2]).to(tl.int64)
            q_row = b * sq[0] + xq0 * sq[1] + xq1 * sq[2] + xq2 * sq[3] + hh * sq[4]
            d_row = b * sd[0] + xq0 * sd[1] + xq1 * sd[2] + xq2 * sd[3] + hh * sd[4]
            l_row = b * sl[0] + xq0 * sl[1] + xq1 * sl[2] + xq2 * sl[3] + hh * sl[4]
            k_row = b * sk[0] + y0 * sk[1] + y1 * sk[2] + y2 * sk[3] + hkk * sk[4]
            v_row = b * sv[0] + y0 * sv[1] + y1 * sv[2] + y2 * sv[3] + hkk * sv[4]
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
    tl.store(DRPB + h * ((2 * KS[1] - 1) * (2 * KS[2] - 1) * (2 * KS[0] - 1)) + ridx, tl.sum(acc, 0))
