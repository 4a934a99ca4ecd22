"""The (query, key) pairs behind one relative position of the bias, shared by the two bias-gradient
kernels (fused_backward.py, unfused_kernels.py). The bias is refused with causal masks, so windows here
are never causal."""

from __future__ import annotations

import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it beside every jit function)

from natten_kernels.triton.fused_geometry import _window


@triton.jit
def _rel_position(ridx, KS0, KS1, KS2):
    """Flat index into ``rpb[h]``'s ``(2k0-1) x (2k1-1) x (2k2-1)`` positions -> its index per axis and
    the key's offset from the query there (group-local, ``-(k-1) .. k-1``)."""
    R1 = 2 * KS1 - 1
    R2 = 2 * KS2 - 1
    i0 = ridx // (R1 * R2)
    i1 = (ridx // R2) % R1
    i2 = ridx % R2
    return i0, i1, i2, i0 - (KS0 - 1), i1 - (KS1 - 1), i2 - (KS2 - 1)


@triton.jit
def _rel_pairs(i, N, L0, L1, L2, DL0, DL1, DL2, KS0, KS1, KS2, ST0, ST1, ST2, rel0, rel1, rel2):
    """Flat tokens ``i`` (``< N`` exist) as queries paired with the key ``rel`` group-local steps away:
    the query's coordinates and dilation group, the key's group-local coordinates, the query's window
    starts, and whether the key is in its window."""
    x0 = i // (L1 * L2)
    x1 = (i // L2) % L1
    x2 = i % L2
    p0 = x0 // DL0
    p1 = x1 // DL1
    p2 = x2 // DL2
    g0 = x0 % DL0
    g1 = x1 % DL1
    g2 = x2 % DL2
    s0, e0 = _window(p0, (L0 - g0 + DL0 - 1) // DL0, KS0, ST0, False)
    s1, e1 = _window(p1, (L1 - g1 + DL1 - 1) // DL1, KS1, ST1, False)
    s2, e2 = _window(p2, (L2 - g2 + DL2 - 1) // DL2, KS2, ST2, False)
    j0 = p0 + rel0
    j1 = p1 + rel1
    j2 = p2 + rel2
    ok = (i < N) & (j0 >= s0) & (j0 < e0) & (j1 >= s1) & (j1 < e1) & (j2 >= s2) & (j2 < e2)
    return x0, x1, x2, g0, g1, g2, j0, j1, j2, s0, s1, s2, ok
