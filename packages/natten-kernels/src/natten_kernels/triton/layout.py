"""Tensor views and small facts every Triton launcher needs: the rank-3 view of ``[B, *S, H, D]``
tensors, strides, per-axis geometry, the dot precision, int64-offset checks, the rpb view."""

from __future__ import annotations

import functools
import itertools

import torch

from natten_kernels.precision import tf32_enabled
from natten_kernels.triton.tiling import pow2_at_least, remainder_cuts

LOG2E = 1.4426950408889634
INT32_MAX = 2**31 - 1


def pad3(values, fill):
    values = list(values)
    return [fill] * (3 - len(values)) + values


def as3(x: torch.Tensor, rank: int) -> torch.Tensor:
    """``[B, *S, H, D]`` -> ``[B, S0, S1, S2, H, D]`` view (unit leading axes); last dim contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    shape = list(x.shape)
    return x.reshape(shape[0], *([1] * (3 - rank)), *shape[1:])


def as3_lse(x: torch.Tensor, rank: int) -> torch.Tensor:
    shape = list(x.shape)
    return x.reshape(shape[0], *([1] * (3 - rank)), *shape[1:])


def strides5(x: torch.Tensor):
    return tuple(x.stride(i) for i in range(5))


def precision(dtype: torch.dtype) -> str:
    """The dot precision of ``dtype``'s tiles: float32 runs in IEEE float32 unless TF32 is allowed
    (natten_kernels.precision); half types run on tensor cores whatever the switch."""
    if dtype == torch.float32 and not tf32_enabled():
        return "ieee"
    return "tf32"


def geometry(q3, kernel_size, dilation, stride, is_causal):
    ks = pad3(kernel_size, 1)
    dl = pad3(dilation, 1)
    st = pad3(stride, 1)
    cz = pad3(is_causal, False)
    L = list(q3.shape[1:4])
    nmax = [-(-L[a] // dl[a]) for a in range(3)]
    return ks, dl, st, [bool(c) for c in cz], L, nmax


def rel64(tensors, boxes, dl, extra) -> bool:
    """Whether offsets relative to a tile's base (within the largest box) can exceed int32."""
    worst = 0
    for x in tensors:
        for box in boxes:
            worst = max(worst, sum((box[a] - 1) * dl[a] * abs(x.stride(a + 1)) for a in range(3)) + extra)
    return worst > INT32_MAX


def rpb3(rpb, h, rank):
    if rpb is None:
        return None, (0, 0, 0, 0)
    r = rpb.to(torch.float32).contiguous()
    r = r.reshape(h, *([1] * (3 - rank)), *r.shape[1:])
    return r, tuple(r.stride(i) for i in range(4))


def dim_block(d):
    return max(16, pow2_at_least(d))


def query_box(q3: torch.Tensor, k3: torch.Tensor, query_offset, rank: int):
    """``(sub, QBOX)`` of the kernels: whether the queries are a box of the key grid, and ``QBOX = (offset,
    extent)`` per internal axis (``((0, 0, 0), key grid)`` when they share the grid). The checks guard
    memory; natten.functional validates the call."""
    q_ext, k_ext = tuple(q3.shape[1:4]), tuple(k3.shape[1:4])
    if not query_offset:
        if q_ext != k_ext:
            raise ValueError(f"q and k must share their spatial axes without a query_offset; got {q_ext} and {k_ext}")
        return False, ((0, 0, 0), k_ext)
    offset = tuple(pad3([int(o) for o in query_offset], 0))
    if len(query_offset) != rank or any(o < 0 or o + n > m for o, n, m in zip(offset, q_ext, k_ext)):
        raise ValueError(
            f"query_offset {list(query_offset)} must place q's spatial box {q_ext[3 - rank :]} inside the key "
            f"grid {k_ext[3 - rank :]}, one offset per spatial axis"
        )
    return True, (offset, q_ext)


def query_tiles(qbox, dilation, tile) -> tuple[list[int], int]:
    """``(tiles per axis, dilation groups)`` of a query-major launch (forward, dq pass): each group's
    queries of the box ``qbox = (offset, extent)`` in tiles of ``tile``, at most."""
    per_group = [-(-qbox[1][a] // dilation[a]) for a in range(3)]
    return [-(-per_group[a] // tile[a]) for a in range(3)], dilation[0] * dilation[1] * dilation[2]


def query_pieces(extent, query_offset, grid, dilation, stride, refine=None) -> list[tuple[tuple, list[int]]]:
    """The query box (``extent`` at ``query_offset`` of the key grid ``grid``) cut where its edges cut a
    stride block (axes without dilation), as ``(index into the box's tensors, the piece's
    query_offset)``: one piece, the box, when they cut none; none without a box. A piece holds whole
    blocks or part of one, so its tiles meet one block's window at a time: a tile across a cut block
    would visit both blocks' windows (S6-s split mid-block: 1.1x the pairs in one launch).
    ``refine((offset, extent))``: the boxes a piece is cut into next (tiling.remainder_cuts)."""
    if not query_offset:
        return []  # no box: the launcher runs the grid as it is
    cuts = []
    for o, n, m, d, s in zip(query_offset, extent, grid, dilation, stride):
        inner = set()
        if d == 1 and s > 1:
            if o % s and -(-o // s) * s < o + n:  # the first block is partial
                inner.add(-(-o // s) * s)
            if (o + n) % s and o + n < m and (o + n) // s * s > o:  # so is the last (not the grid's end)
                inner.add((o + n) // s * s)
        cuts.append(list(itertools.pairwise([o, *sorted(inner), o + n])))
    boxes = [(tuple(a for a, _ in p), tuple(b - a for a, b in p)) for p in itertools.product(*cuts)]
    if refine is not None:
        boxes = [sub for box in boxes for sub in refine(box)]
    return [
        ((slice(None), *(slice(a - o, a - o + n) for a, n, o in zip(*box, query_offset))), list(box[0]))
        for box in boxes
    ]


def box_pieces(extent, query_offset, grid, head_dim, kernel_size, dilation, stride, is_causal, config) -> list:
    """What a launcher runs a query box in (:func:`query_pieces`); with the default tiles (``config``
    empty) cut again where those leave a costly remainder (tiling.remainder_cuts)."""
    refine = None
    if query_offset and not config:
        geometry = (*(tuple(x) for x in (kernel_size, dilation, stride)), tuple(bool(c) for c in is_causal))
        refine = functools.partial(remainder_cuts, head_dim, tuple(grid), *geometry)
    return query_pieces(extent, query_offset, grid, dilation, stride, refine)
