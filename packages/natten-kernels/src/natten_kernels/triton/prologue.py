"""The kernels' shared prologue: a program id -> its dilation group and box of tokens, and a loop index ->
the tile it visits (rank-3 internal view; geometry: fused_geometry.py). Triton inlines these calls, and
constexpr arguments stay constexpr in them, so a kernel compiles as if the lines stood in its body."""

from __future__ import annotations

import triton
import triton.language as tl

from natten_kernels.triton.fused_geometry import _box_rows, _group, _rows_ok, _split


@triton.jit
def _tile_origin(tile, N1, N2, B0, B1, B2):
    """Box number ``tile`` (row-major, ``N1 x N2`` boxes on the two inner axes) -> its first coordinate
    on each axis, for boxes of ``B0 x B1 x B2``."""
    return (tile // (N1 * N2)) * B0, ((tile // N2) % N1) * B1, (tile % N2) * B2


@triton.jit
def _program_box(pid, G, L, DL, N1, N2, B: tl.constexpr, RANK: tl.constexpr):
    """Program ``pid = box * G + group`` -> its dilation group (coordinates, group lengths), the box's
    origin, its ``B[0] * B[1] * B[2]`` tokens as flattened rows (group-local coordinates) and which exist
    (``RANK = 0``: every axis, tested outer axis first; else ``_rows_ok``)."""
    g0, g1, g2, n0, n1, n2 = _group(pid % G, L, DL)
    o0, o1, o2 = _tile_origin(pid // G, N1, N2, B[0], B[1], B[2])
    r0, r1, r2 = _box_rows(B[0] * B[1] * B[2], B[1], B[2])
    i0 = o0 + r0
    i1 = o1 + r1
    i2 = o2 + r2
    if RANK == 0:
        ok = (i0 < n0) & (i1 < n1) & (i2 < n2)
    else:
        ok = _rows_ok(i0, i1, i2, n0, n1, n2, RANK)
    return g0, g1, g2, n0, n1, n2, o0, o1, o2, i0, i1, i2, ok


@triton.jit
def _box_queries(g0, g1, g2, DL, QBOX):
    """Group-local ``[start, end)`` per axis of the queries of dilation group ``g`` in the query box
    ``QBOX = (offset, extent)`` of the key grid."""
    QO, QL = QBOX
    s0 = (QO[0] - g0 + DL[0] - 1) // DL[0]
    s1 = (QO[1] - g1 + DL[1] - 1) // DL[1]
    s2 = (QO[2] - g2 + DL[2] - 1) // DL[2]
    e0 = (QO[0] + QL[0] - g0 + DL[0] - 1) // DL[0]
    e1 = (QO[1] + QL[1] - g1 + DL[1] - 1) // DL[1]
    e2 = (QO[2] + QL[2] - g2 + DL[2] - 1) // DL[2]
    return s0, e0, s1, e1, s2, e2


@triton.jit
def _query_box(pid, G, L, DL, N1, N2, B: tl.constexpr, RANK: tl.constexpr, QBOX, SUB: tl.constexpr):
    """``_program_box`` for query tiles, plus each axis' end of the group's queries. ``SUB``: the queries
    are the box ``QBOX = (offset, extent)`` of the key grid ``L`` (a shard inside its halo), so a
    program's tiles start at the group's first query in the box and end at its last; coordinates stay
    group-local in the key grid (windows need no change), only the query tensors' addresses shift."""
    if SUB:
        g0, g1, g2, n0, n1, n2 = _group(pid % G, L, DL)
        o0, o1, o2 = _tile_origin(pid // G, N1, N2, B[0], B[1], B[2])
        s0, e0, s1, e1, s2, e2 = _box_queries(g0, g1, g2, DL, QBOX)
        o0 += s0
        o1 += s1
        o2 += s2
        r0, r1, r2 = _box_rows(B[0] * B[1] * B[2], B[1], B[2])
        i0 = o0 + r0
        i1 = o1 + r1
        i2 = o2 + r2
        ok = _rows_ok(i0, i1, i2, e0, e1, e2, RANK)
    else:
        g0, g1, g2, n0, n1, n2, o0, o1, o2, i0, i1, i2, ok = _program_box(pid, G, L, DL, N1, N2, B, RANK)
        e0 = n0
        e1 = n1
        e2 = n2
    return g0, g1, g2, n0, n1, n2, o0, o1, o2, i0, i1, i2, ok, e0, e1, e2


@triton.jit
def _query_origin(c0, c1, c2, QBOX, SUB: tl.constexpr):
    """Token coordinates of the key grid -> those of the query tensors (``SUB``: less the box offset)."""
    if SUB:
        QO, _QL = QBOX
        c0 = c0 - QO[0]
        c1 = c1 - QO[1]
        c2 = c2 - QO[2]
    return c0, c1, c2


@triton.jit
def _tile_at(t, lo0, lo1, lo2, n1, n2, r0, r1, r2, B: tl.constexpr, RANK: tl.constexpr):
    """Step ``t`` of a loop over boxes of ``B`` from ``lo`` (``n1 x n2`` on the inner axes) -> the box's
    origin and its rows ``r`` (from ``_box_rows``) as coordinates."""
    i0, i1, i2 = _split(t, n1, n2, RANK)
    b0 = lo0 + i0 * B[0]
    b1 = lo1 + i1 * B[1]
    b2 = lo2 + i2 * B[2]
    return b0, b1, b2, b0 + r0, b1 + r1, b2 + r2


@triton.jit
def _batch_head(bh, H):
    """Grid index ``b * H + h`` of the unfused kernels -> ``(b, h)`` as int64 (offset arithmetic)."""
    return (bh // H).to(tl.int64), (bh % H).to(tl.int64)
