"""The fused forward for small windows (forward variant 2): a query tile is a small box (e.g. 4x4
queries: one 16-row product) whose keys are gathered from its halo flattened row-major, in ``NCHUNK``
chunks of ``BLOCK_K``, instead of covering the halo with power-of-two key boxes. The halo is a box of
fixed size ``H0 x H1 x H2`` (the largest any tile needs, shifted inside the group at the borders), so
the chunk's key coordinates and offsets are computed once per program; a program walks ``PER``
neighboring tiles, and the loop's loads are pipelined across tiles (the next tile's keys arrive while
this one's softmax runs).

Why: a 13x13 window over a 64-query box has a 20x20 halo, which key boxes cover with 24x24 or more
(tile efficiency <= 0.44); a 4x4 sub-box's halo is 16x16, one 256-key chunk (0.66), and 7x7 windows
go from 0.23 to 0.38-0.41. Neighboring sub-boxes are neighboring programs, so their overlapping halos
are read from L1/L2, not HBM. Geometry (windows, dilation groups, addresses, masks) is
fused_geometry.py's; this file only changes which keys a tile holds.
"""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import _bias, _box_rows, _cols, _group, _inside, _off, _split, _window


@triton.jit
def _halo_start(qb, T: tl.constexpr, n, KS, ST, C: tl.constexpr, H):
    """First key of the fixed-size halo ``[lo, lo + H)`` of the query tile ``[qb, qb + T)`` on one axis:
    the tile's first window start, moved left where the halo would pass the group's end."""
    lo, _e = _window(qb, n, KS, ST, C)
    return tl.maximum(tl.minimum(lo, n - H), 0)


@triton.jit
def na_fwd_gather_kernel(
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
    H0,
    H1,
    H2,
    NT1,
    NT2,
    NTILES,
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
    PER: tl.constexpr,
    BLOCK_K: tl.constexpr,
    NCHUNK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    REL64: tl.constexpr,
    SCALE_FIRST: tl.constexpr,
):
    """Program ``pid``: query tiles ``[j * PER, (j + 1) * PER)`` (row-major over the group's
    ``T0 x T1 x T2`` boxes, ``NTILES`` of them; ``j = pid // G``) of dilation group ``pid % G``."""
    BLOCK_Q: tl.constexpr = T0 * T1 * T2
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hk = h // QPK
    grp = pid % G
    first = (pid // G) * PER
    g0, g1, g2, n0, n1, n2 = _group(grp, L0, L1, L2, DL0, DL1, DL2)

    r0, r1, r2 = _box_rows(BLOCK_Q, T1, T2)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_base = Q + b * sqb + h.to(tl.int64) * sqh
    o_base = O + b * sob + h.to(tl.int64) * soh
    l_base = LSE + b * slb + h.to(tl.int64) * slh
    k_base = K + b * skb + hk.to(tl.int64) * skh + _off(g0, g1, g2, 1, 1, 1, sk0, sk1, sk2, True)
    v_base = V + b * svb + hk.to(tl.int64) * svh + _off(g0, g1, g2, 1, 1, 1, sv0, sv1, sv2, True)
    nhalo = H0 * H1 * H2

    for t in tl.range(first, tl.minimum(first + PER, NTILES)):
        t0, t1, t2 = _split(t, NT1, NT2, 3)
        qb0 = t0 * T0
        qb1 = t1 * T1
        qb2 = t2 * T2
        qi0 = qb0 + r0
        qi1 = qb1 + r1
        qi2 = qb2 + r2
        qvalid = (qi0 < n0) & (qi1 < n1) & (qi2 < n2)
        q_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, sq0, sq1, sq2, True)
        q = tl.load(q_base + q_row[:, None] + offs_d[None, :], mask=_cols(qvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0)
        qs0, qe0 = _window(qi0, n0, KS0, ST0, C0)
        qs1, qe1 = _window(qi1, n1, KS1, ST1, C1)
        qs2, qe2 = _window(qi2, n2, KS2, ST2, C2)
        lo0 = _halo_start(qb0, T0, n0, KS0, ST0, C0, H0)
        lo1 = _halo_start(qb1, T1, n1, KS1, ST1, C1, H1)
        lo2 = _halo_start(qb2, T2, n2, KS2, ST2, C2, H2)
        k_tile = k_base + _off(lo0, lo1, lo2, DL0, DL1, DL2, sk0, sk1, sk2, True)
        v_tile = v_base + _off(lo0, lo1, lo2, DL0, DL1, DL2, sv0, sv1, sv2, True)

        m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_Q], tl.float32)
        acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)
        for c in tl.static_range(NCHUNK):
            # halo index -> offsets within the halo (the same for every tile: hoisted out of the loop)
            idx = c * BLOCK_K + tl.arange(0, BLOCK_K)
            d2 = idx % H2
            d1 = (idx // H2) % H1
            d0 = idx // (H1 * H2)
            kj0 = lo0 + d0
            kj1 = lo1 + d1
            kj2 = lo2 + d2
            kvalid = (idx < nhalo) & (kj0 < n0) & (kj1 < n1) & (kj2 < n2)
            k_rel = _off(d0, d1, d2, DL0, DL1, DL2, sk0, sk1, sk2, REL64)
            k = tl.load(
                k_tile + k_rel[:, None] + offs_d[None, :], mask=_cols(kvalid, offs_d, HEAD_DIM, BLOCK_D), other=0.0
            )
            v_rel = _off(d0, d1, d2, DL0, DL1, DL2, sv0, sv1, sv2, REL64)
            v = tl.load(
                v_tile + v_rel[:, None] + offs_dv[None, :],
                mask=_cols(kvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k), input_precision=PREC)
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
                    qvalid[:, None] & kvalid[None, :],
                )
            ok = kvalid[None, :] & _inside(kj2[None, :], qs2[:, None], qe2[:, None])
            if RANK >= 2:
                ok = ok & _inside(kj1[None, :], qs1[:, None], qe1[:, None])
            if RANK >= 3:
                ok = ok & _inside(kj0[None, :], qs0[:, None], qe0[:, None])
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1) * s_scale)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s * s_scale - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
            m_i = m_new

        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        out = acc * (1.0 / l_safe)[:, None]
        o_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, so0, so1, so2, True)
        tl.store(
            o_base + o_row[:, None] + offs_dv[None, :],
            out.to(O.dtype.element_ty),
            mask=_cols(qvalid, offs_dv, HEAD_DIM_V, BLOCK_DV),
        )
        lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
        l_row = _off(g0 + qi0 * DL0, g1 + qi1 * DL1, g2 + qi2 * DL2, 1, 1, 1, sl0, sl1, sl2, True)
        tl.store(l_base + l_row, lse, mask=qvalid)
