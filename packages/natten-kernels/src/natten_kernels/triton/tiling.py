"""Tile shapes: how a block of BLOCK tokens becomes a box over the rank-3 view (pure Python)."""

from __future__ import annotations

import math


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def box(
    block: int, extent: tuple[int, int, int], kernel: tuple[int, int, int], align: tuple[int, int, int] | None = None
) -> tuple[int, int, int]:
    """A power-of-two box of ``block`` tokens shaped like the kernel window.

    Axes grow (doubling) where the box is smallest relative to the kernel, never past the next
    power of two of the axis extent. With ``align`` (per-axis sizes such as the kernel or the stride),
    a first pass grows only axes whose doubled size still divides the alignment, so tiles line up
    with windows and stride blocks (perfectly block-sparse problems then need no mask at all).
    """
    dims = [1, 1, 1]
    cap = [_pow2_at_least(e) for e in extent]
    target = int(math.log2(block))

    def grow(require_align: bool) -> bool:
        best = None
        for a in (2, 1, 0):  # ties go to the innermost (contiguous) axis
            if dims[a] * 2 > cap[a]:
                continue
            if require_align and (align is None or align[a] <= 1 or align[a] % (dims[a] * 2)):
                continue
            ratio = dims[a] / max(kernel[a], 1)
            if best is None or ratio < best[0]:
                best = (ratio, a)
        if best is None:
            return False
        dims[best[1]] *= 2
        return True

    steps = 0
    while steps < target and align is not None and grow(True):
        steps += 1
    while steps < target and grow(False):
        steps += 1
    while steps < target:  # tiny problem: the dot still needs >= 16 rows; the extra rows are masked
        dims[2] *= 2
        steps += 1
    return dims[0], dims[1], dims[2]


def default_config(head_dim: int, dtype_bytes: int, backward: bool = False) -> list[int]:
    """``[block_q, block_k, num_warps, num_stages]`` for a head dim and element size."""
    d = _pow2_at_least(max(head_dim, 16))
    if backward:
        if d <= 64:
            cfg = [64, 64, 4, 2]
        elif d <= 128:
            cfg = [64, 64, 8, 2]
        else:
            cfg = [32, 32, 4, 1]
    else:
        if d <= 64:
            cfg = [128, 64, 4, 3]
        elif d <= 128:
            cfg = [128, 64, 8, 2]
        else:
            cfg = [64, 32, 4, 2]
    if dtype_bytes >= 4:  # fp32 tiles take twice the shared memory
        cfg[0] = max(16, cfg[0] // 2)
        cfg[1] = max(16, cfg[1] // 2) if d > 64 else cfg[1]
    return cfg
