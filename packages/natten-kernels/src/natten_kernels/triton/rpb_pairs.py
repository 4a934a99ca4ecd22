"""The (query, key) pairs behind one relative position of the bias, shared by the two bias-gradient
kernels (fused_backward.py, unfused_kernels.py). The bias is refused with causal masks, so windows here
are never causal."""

from __future__ import annotations

import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it beside every jit function)

from natten_kernels.triton.fused_geometry import _window


@triton.jit
def _rel_position(ridx, KS):
    """Flat index into ``rpb[h]``'s ``(2k0-1) x (2k1-1) x (2k2-1)`` positions -> its index per axis and
    the key's offset from the query there (group-local, ``-(k-1) .. k-1``)."""
    R1 = 2 * KS[1] - 1
    R2 = 2 * KS[2] - 1
    i0 = ridx // (R1 * R2)
    i1 = (ridx // R2) % R1
    i2 = ridx % R2
    return i0, i1, i2, i0 - (KS[0] - 1), i1 - (KS[1] - 1), i2 - (KS[2] - 1)


@triton.jit
def _rel_pairs(i, N, L, DL, KS, ST, rel0, rel1, rel2, QO, QL):
    """Flat queries ``i`` (``< N`` exist) of the box ``QL`` at ``QO`` of the grid ``L`` (``QO = (0, 0, 0),
    QL = L``: every token) paired with the key ``rel`` group-local steps away: the query's coordinates
    in the grid and dilation group, the key's group-local coordinates, the query's window starts, and
    whether the key is in its window."""
    x0 = i // (QL[1] * QL[2]) + QO[0]
    x1 = (i // QL[2]) % QL[1] + QO[1]
    x2 = i % QL[2] + QO[2]
    p0 = x0 // DL[0]
    p1 = x1 // DL[1]
    p2 = x2 // DL[2]
    g0 = x0 % DL[0]
    g1 = x1 % DL[1]
    g2 = x2 % DL[2]
    s0, e0 = _window(p0, (L[0] - g0 + DL[0] - 1) // DL[0], KS[0], ST[0], False)
    s1, e1 = _window(p1, (L[1] - g1 + DL[1] - 1) // DL[1], KS[1], ST[1], False)
    s2, e2 = _window(p2, (L[2] - g2 + DL[2] - 1) // DL[2], KS[2], ST[2], False)
    j0 = p0 + rel0
    j1 = p1 + rel1
    j2 = p2 + rel2
    ok = (i < N) & (j0 >= s0) & (j0 < e0) & (j1 >= s1) & (j1 < e1) & (j2 >= s2) & (j2 < e2)
    return x0, x1, x2, g0, g1, g2, j0, j1, j2, s0, s1, s2, ok
