"""The fused forward where every window is its whole dilation group: on each axis the group length
equals the kernel size (``extent == kernel_size * dilation``, not causal; stride then changes
nothing), so neighborhood attention is dense attention inside each group (DiNAT's widest dilation,
S5-d8). No window, halo or mask math: one product tile per group, a single-pass softmax, and a
persistent loop over (batch, group, head) items whose loads Triton pipelines across items.
Geometry helpers: fused_geometry.py."""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import _bias, _box_rows, _cols, _dot, _off


@triton.jit
def _group_base(b, h, g0, g1, g2, s):
    """Offset of head ``h``'s first token of dilation group ``(g0, g1, g2)`` in batch ``b``, for strides
    ``s = (batch, axis 0, axis 1, axis 2, head)``."""
    return b * s[0] + h * s[4] + g0 * s[1] + g1 * s[2] + g2 * s[3]


@triton.jit
def na_fwd_groups_kernel(
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
    DL,
    H,
    QPK,
    n_items,
    qk_scale,
    KS: tl.constexpr,
    BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    HAS_RPB: tl.constexpr,
    PREC: tl.constexpr,
    REL64: tl.constexpr,
    SCALE_FIRST: tl.constexpr,
):
    """Program ``p`` takes items ``p, p + P, ...`` (``P`` programs); item = ``(b * G + group) * H + h``,
    heads fastest (heads-last layout: neighbouring items share cache lines). A group's ``KS[0] * KS[1] *
    KS[2]`` tokens are the tile's rows (padded to ``BLOCK``); their offsets are the same in every group."""
    TOKENS: tl.constexpr = KS[0] * KS[1] * KS[2]
    c0, c1, c2 = _box_rows(BLOCK, KS[1], KS[2])
    valid = tl.arange(0, BLOCK) < TOKENS
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_rel = _off(c0, c1, c2, DL, sq, REL64)[:, None] + offs_d[None, :]
    k_rel = _off(c0, c1, c2, DL, sk, REL64)[:, None] + offs_d[None, :]
    v_rel = _off(c0, c1, c2, DL, sv, REL64)[:, None] + offs_dv[None, :]
    o_rel = _off(c0, c1, c2, DL, so, REL64)[:, None] + offs_dv[None, :]
    l_rel = _off(c0, c1, c2, DL, sl, REL64)
    G = DL[0] * DL[1] * DL[2]
    for item in tl.range(tl.program_id(0), n_items, tl.num_programs(0)):
        h = item % H
        rest = (item // H).to(tl.int64)
        grp = rest % G
        b = rest // G
        g0 = grp // (DL[1] * DL[2])
        g1 = (grp // DL[2]) % DL[1]
        g2 = grp % DL[2]
        hk = h // QPK
        q = tl.load(
            Q + _group_base(b, h, g0, g1, g2, sq) + q_rel,
            mask=_cols(valid, offs_d, HEAD_DIM, BLOCK_D),
            other=0.0,
        )
        k = tl.load(
            K + _group_base(b, hk, g0, g1, g2, sk) + k_rel,
            mask=_cols(valid, offs_d, HEAD_DIM, BLOCK_D),
            other=0.0,
        )
        s = _dot(q, tl.trans(k), PREC)
        if SCALE_FIRST:
            s = s * qk_scale
            s_scale = 1.0
        else:  # the scale rides in the row max and in one fused multiply-add before exp2
            s_scale = qk_scale
        if HAS_RPB:
            s += _bias(RPB, s_r, h, KS, c0, c1, c2, valid, c0, c1, c2, valid, False)
        if TOKENS < BLOCK:
            s = tl.where(valid[None, :], s, float("-inf"))
        m = tl.max(s, 1) * s_scale
        p = tl.exp2(s * s_scale - m[:, None])
        l_sum = tl.sum(p, 1)
        v = tl.load(
            V + _group_base(b, hk, g0, g1, g2, sv) + v_rel,
            mask=_cols(valid, offs_dv, HEAD_DIM_V, BLOCK_DV),
            other=0.0,
        )
        out = _dot(p.to(v.dtype), v, PREC) * (1.0 / l_sum)[:, None]
        tl.store(
            O + _group_base(b, h, g0, g1, g2, so) + o_rel,
            out.to(O.dtype.element_ty),
            mask=_cols(valid, offs_dv, HEAD_DIM_V, BLOCK_DV),
        )
        lse = (m + tl.log2(l_sum)) * 0.6931471805599453
        tl.store(LSE + _group_base(b, h, g0, g1, g2, sl) + l_rel, lse, mask=valid)
