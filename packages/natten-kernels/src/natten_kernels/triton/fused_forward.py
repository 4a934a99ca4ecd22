"""The fused forward kernel: output and logsumexp per query tile over its haloed key box (geometry:
fused_geometry.py)."""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import (
    _bias,
    _box_rows,
    _cols,
    _dot,
    _key_box,
    _kv_descriptor,
    _mask_box,
    _off,
    _rows_ok,
    _windows,
)
from natten_kernels.triton.prologue import _program_box, _tile_at


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
    NONFINITE: tl.constexpr = False,
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
    g0, g1, g2, n0, n1, n2, qb0, qb1, qb2, qi0, qi1, qi2, qvalid = _program_box(
        pid, G, L0, L1, L2, DL0, DL1, DL2, NT1, NT2, T0, T1, T2, RANK
    )
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
    qs0, qe0, qs1, qe1, qs2, qe2 = _windows(qi0, qi1, qi2, n0, n1, n2, KS0, KS1, KS2, ST0, ST1, ST2, C0, C1, C2)
    kl0, kl1, kl2, nk1, nk2, hi0, hi1, hi2, smax0, smax1, smax2, emin0, emin1, emin2, total = _key_box(
        qb0, qb1, qb2, n0, n1, n2, KS0, KS1, KS2, ST0, ST1, ST2, C0, C1, C2, T0, T1, T2, KB0, KB1, KB2
    )

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

    if NONFINITE:  # experiment (perf notes v7): per query, the non-finite values inside its window
        n_bad = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    for t in range(0, total):
        kb0, kb1, kb2, kj0, kj1, kj2 = _tile_at(t, kl0, kl1, kl2, nk1, nk2, c0, c1, c2, KB0, KB1, KB2, RANK)
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
            k_ok = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
            s += _bias(RPB, s_rh, s_r0, s_r1, s_r2, h, KS0, KS1, KS2, qi0, qi1, qi2, qvalid, kj0, kj1, kj2, k_ok, False)
        s = _mask_box(
            s, kb0, kb1, kb2, KB0, KB1, KB2, smax0, smax1, smax2, emin0, emin1, emin2, kj0, kj1, kj2,
            qs0, qe0, qs1, qe1, qs2, qe2, RANK,
        )  # fmt: skip
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
        if NONFINITE:  # a masked (q, k) pair must not see v[k]: 0 x NaN in the product would
            v_bad = (v != v) | (tl.abs(v.to(tl.float32)) == float("inf"))
            n_bad = tl.dot((s != float("-inf")).to(v.dtype), v_bad.to(v.dtype), n_bad, input_precision=PREC)
            v = tl.where(v_bad, 0.0, v)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc * (1.0 / l_safe)[:, None]
    if NONFINITE:
        out = tl.where(n_bad > 0, float("nan"), out)
    o_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, so0, so1, so2, True)
    tl.store(
        O + b * sob + h.to(tl.int64) * soh + o_row[:, None] + offs_dv[None, :],
        out.to(O.dtype.element_ty),
        mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
    )
    lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
    l_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, sl0, sl1, sl2, True)
    tl.store(LSE + b * slb + h.to(tl.int64) * slh + l_row, lse, mask=qvalid)
