"""The window rule (docs/semantics.md), once, in Python: what every host-side computation of natten's
neighborhoods uses (the Triton tiling and its tile efficiencies, the FLOP formulas). The kernels carry
their own copies (C++ ``csrc/include/natten/neighborhood.h``, Triton ``triton/fused_geometry._window``),
tested against this one exhaustively on small axes (tests/test_window.py), and the reference oracle
(``natten_legacy.reference.neighborhood_slots``) is independent of all of them.
"""

from __future__ import annotations

import functools


def window(p: int, n: int, k: int, s: int = 1, causal: bool = False) -> tuple[int, int]:
    """Group-local keys ``[start, end)`` of group-local query ``p`` in a dilation group of ``n`` tokens,
    kernel ``k``, stride ``s``: non-causal windows are ``k`` keys shifted (never truncated) at the
    borders; causal ones end at the query; a stride block's leader chooses the window."""
    if causal:
        c = min((p // s) * s + s - 1, n - 1)
        return max(c - k + 1, 0), p + 1
    c = min((p // s) * s + s // 2, n - 1)
    start = min(max(c - k // 2, 0), n - k)
    return start, start + k


def group_lengths(length: int, dilation: int) -> list[int]:
    """Tokens of each dilation group ``g`` of an axis: ``ceil((length - g) / dilation)``."""
    return [-(-(length - g) // dilation) for g in range(dilation)]


@functools.lru_cache(maxsize=4096)
def axis_pairs(
    length: int,
    kernel_size: int,
    dilation: int = 1,
    stride: int = 1,
    is_causal: bool = False,
    queries: tuple[int, int] | None = None,
) -> int:
    """Attended (query, key) pairs along one axis: the sum of every query's window length; ``queries``:
    only those of positions ``[first, stop)`` (a query box inside the key grid)."""
    first, stop = (0, length) if queries is None else queries
    if not is_causal:  # every window holds exactly kernel_size keys
        return (stop - first) * kernel_size
    total = 0
    for i in range(first, stop):
        n = -(-(length - i % dilation) // dilation)
        b, e = window(i // dilation, n, kernel_size, stride, True)
        total += e - b
    return total
