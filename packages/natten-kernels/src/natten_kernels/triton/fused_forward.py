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
from natten_kernels.triton.prologue import _query_box, _query_origin, _tile_at


@triton.jit
def na_fwd_kernel(
    Q,
    K,
    V,
    O,  # noqa: E741
    LSE,
    RPB,
    sq,
    sk,
    sv,
    so,
    sl,
    s_r,
    GEO,
    NT1,
    NT2,
    G,
    QPK,
    qk_scale,
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
    Q_TMA: tl.constexpr = False,
    NONFINITE: tl.constexpr = False,
    SUB: tl.constexpr = False,
):
    """Strides ``s*`` are ``(batch, axis 0, axis 1, axis 2, head)`` per tensor (``s_r``: rpb's ``(head,
    axis 0, axis 1, axis 2)``); ``GEO = (L, KS, DL, ST)``: per-axis extents, kernel sizes, dilations,
    strides (one tuple: this kernel and the backward ones take the four together); ``C``, ``T``, ``KB``:
    per-axis causal flags, query box and key box.

    ``TMA_HOST``: ``K``/``V`` are host-built descriptors over ``[B, L0, L1, L2, H * D]`` (no dilation,
    head dims that fill their blocks), which spares every program building its own (``TMA``).
    ``Q_TMA``: ``Q`` is one too (the query tile lands in shared memory without staging in registers).
    ``SUB``: q, out and lse hold the query box ``QBOX = (offset, extent)`` of the key grid (prologue)."""
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
    if Q_TMA:  # no dilation: the group is the grid
        t0, t1, t2 = _query_origin(qb0, qb1, qb2, QBOX, SUB)
        q = tl.reshape(Q.load([tl.program_id(2), t0, t1, t2, h * HEAD_DIM]), [BLOCK_Q, BLOCK_D])
    else:
        x_row = _off(x0, x1, x2, (1, 1, 1), sq, True)
        q = tl.load(
            Q + b * sq[0] + h.to(tl.int64) * sq[4] + x_row[:, None] + offs_d[None, :],
            mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D),
            other=0.0,
        )

    # per-query windows (used on partial tiles only) and, per axis, the key tiles of this query tile
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

    if NONFINITE:  # experiment (perf notes v7): per query, the non-finite values inside its window
        n_bad = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
    for t in range(0, total):
        kb0, kb1, kb2, kj0, kj1, kj2 = _tile_at(t, kl0, kl1, kl2, nk1, nk2, c0, c1, c2, KB, RANK)
        if TMA_HOST:
            k = tl.reshape(K.load([tl.program_id(2), kb0, kb1, kb2, hk * HEAD_DIM]), [BLOCK_K, BLOCK_D])
        elif TMA:
            k = tl.reshape(k_desc.load([kb0, kb1, kb2, 0]), [BLOCK_K, BLOCK_D])
        else:
            kvalid = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
            tile_off = _off(kb0, kb1, kb2, DL, sk, True)
            k = tl.load(k_base + tile_off + k_rel, mask=_cols(kvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
        s = _dot(q, tl.trans(k), PREC)
        if SCALE_FIRST:
            s = s * qk_scale
            s_scale = 1.0
        else:  # the scale rides in the row max and in one fused multiply-add before exp2
            s_scale = qk_scale
        if HAS_RPB:
            k_ok = _rows_ok(kj0, kj1, kj2, hi0, hi1, hi2, RANK)
            s += _bias(RPB, s_r, h, KS, qi0, qi1, qi2, qvalid, kj0, kj1, kj2, k_ok, False)
        s = _mask_box(
            s, kb0, kb1, kb2, KB, smax0, smax1, smax2, emin0, emin1, emin2, kj0, kj1, kj2, qs0, qe0, qs1, qe1, qs2,
            qe2, RANK,
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
            v_off = _off(kb0, kb1, kb2, DL, sv, True)
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
    o_row = _off(x0, x1, x2, (1, 1, 1), so, True)
    tl.store(
        O + b * so[0] + h.to(tl.int64) * so[4] + o_row[:, None] + offs_dv[None, :],
        out.to(O.dtype.element_ty),
        mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
    )
    lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
    l_row = _off(x0, x1, x2, (1, 1, 1), sl, True)
    tl.store(LSE + b * sl[0] + h.to(tl.int64) * sl[4] + l_row, lse, mask=qvalid)
