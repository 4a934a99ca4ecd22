"""What each rank computes and exchanges, derived from the window rule alone (pure Python, cached).

One axis (:func:`axis_plan`): a rank owns global positions ``[start, stop)``. Its queries attend the
keys in ``needed`` (the union of their windows; not contiguous with dilation and thin shards). The
rank runs the local op on the *extended* key range ``[lo, hi)`` with its queries as the box
``[start, stop)`` of it (the op's ``query_offset``). That is exact iff the window rule applied to the
extended axis (length ``hi - lo``, positions shifted by ``lo``) gives every owned query its global
window, which holds when

* ``lo <= min(needed)`` and, with a stride, ``lo`` is a multiple of ``dilation * stride`` (every
  dilation group's local index is then its global index shifted by a multiple of the stride, so the
  stride blocks keep their leaders; with stride 1 a shift of any size is harmless);
* ``hi > max(needed)`` and, on a causal axis, ``hi`` holds the leader of the last owned stride block
  (the leader's clamp to the group's end decides where a causal window starts);
* ``hi - lo >= kernel_size * dilation`` (what the local op accepts).

:func:`axis_plan` picks the smallest such range, then checks every owned query against the global
rule and widens until they all match (never needed in the tests; ``AxisPlan.widened`` counts it).
Only ``needed`` keys are moved; the rest of the extended range is zero-filled (``RankPlan.unwritten``),
since no owned query attends it.

Several axes (:func:`rank_plan`): ranks form a row-major grid over the sharded axes; a rank's needed
keys are the product of its per-axis needed sets (its queries form a box and windows are products),
so rank ``me`` receives from rank ``r`` exactly the product over axes of ``needed_me ∩ owned_r`` —
corners come straight from the diagonal neighbour, and nothing it does not attend.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from natten_kernels.window import window


def _group_length(length: int, g: int, dilation: int) -> int:
    return -(-(length - g) // dilation)


def _global_window(length: int, k: int, d: int, s: int, causal: bool, i: int) -> tuple[int, int]:
    """Global first key and key count of query ``i`` (keys ``first, first + d, ...``)."""
    g, p = i % d, i // d
    start, end = window(p, _group_length(length, g, d), k, s, causal)
    return g + start * d, max(end - start, 0)


def _leader(length: int, k: int, d: int, s: int, causal: bool, i: int) -> int:
    """Global position of the stride-block leader that chooses query ``i``'s window."""
    g, p = i % d, i // d
    n = _group_length(length, g, d)
    c = min((p // s) * s + (s - 1 if causal else s // 2), n - 1)
    return g + c * d


def is_exact(length: int, k: int, d: int, s: int, causal: bool, start: int, stop: int, lo: int, hi: int) -> bool:
    """Whether the local rule on ``[lo, hi)`` gives every query of ``[start, stop)`` its global window."""
    if not (0 <= lo <= start and stop <= hi <= length) or hi - lo < k * d:
        return False
    for i in range(start, stop):
        first, count = _global_window(length, k, d, s, causal, i)
        local_first, local_count = _global_window(hi - lo, k, d, s, causal, i - lo)
        if count != local_count or (count and first != lo + local_first):
            return False
    return True


@dataclass(frozen=True)
class AxisPlan:
    """One rank on one axis: owned ``[start, stop)``, extended ``[lo, hi)``, attended keys ``needed``
    (sorted global positions), and ``widened``: positions the check added to the derived range."""

    length: int
    start: int
    stop: int
    lo: int
    hi: int
    needed: tuple[int, ...]
    widened: int = 0

    @property
    def halo(self) -> int:
        """Needed keys this rank does not own: what it receives on this axis."""
        return sum(1 for j in self.needed if not self.start <= j < self.stop)


@functools.lru_cache(maxsize=4096)
def axis_plan(length: int, k: int, d: int, s: int, causal: bool, start: int, stop: int) -> AxisPlan:
    """The plan of queries ``[start, stop)`` on an axis of ``length`` (kernel ``k``, dilation ``d``,
    stride ``s``); see the module docstring for the conditions it meets."""
    if not 0 <= start < stop <= length:
        raise ValueError(f"owned range [{start}, {stop}) must be a non-empty part of [0, {length})")
    runs: dict[int, list[list[int]]] = {}  # dilation group -> merged [first, last] group-local key runs
    leader = 0
    for i in range(start, stop):
        g, p = i % d, i // d
        if causal:
            leader = max(leader, _leader(length, k, d, s, causal, i))
        a, b = window(p, _group_length(length, g, d), k, s, causal)
        if b <= a:
            continue
        group = runs.setdefault(g, [])
        if group and a <= group[-1][1] + 1:  # window starts and ends never decrease along a group
            group[-1][1] = max(group[-1][1], b - 1)
        else:
            group.append([a, b - 1])
    needed = tuple(sorted(g + q * d for g, group in runs.items() for a, b in group for q in range(a, b + 1)))
    lo = min(start, needed[0]) if needed else start
    hi = max(stop, needed[-1] + 1) if needed else stop
    if causal:
        hi = max(hi, leader + 1)
    align = d * s if s > 1 else 1  # dilation groups may start anywhere; stride blocks may not
    lo -= lo % align
    if hi - lo < k * d:
        hi = min(length, lo + k * d)
        if hi - lo < k * d:
            lo = max(0, hi - k * d)
            lo -= lo % align
    derived = hi - lo
    while not is_exact(length, k, d, s, causal, start, stop, lo, hi):
        if hi < length:
            hi += 1
        else:
            lo = max(0, lo - align)
    return AxisPlan(length, start, stop, lo, hi, needed, (hi - lo) - derived)


@dataclass(frozen=True)
class Layout:
    """The global problem and how it is cut: ``spatial`` (global sizes), ``sharded_axes`` with a
    row-major ``grid`` of ranks over them, and each rank's owned ``(start, stop)`` per spatial axis."""

    spatial: tuple[int, ...]
    sharded_axes: tuple[int, ...]
    grid: tuple[int, ...]
    bounds: tuple[tuple[tuple[int, int], ...], ...]  # [rank][axis] -> (start, stop)

    @property
    def world(self) -> int:
        return len(self.bounds)

    def local_shape(self, rank: int) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.bounds[rank])


def grid_coords(rank: int, grid: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major coordinates of ``rank`` in ``grid``."""
    coords = []
    for n in reversed(grid):
        coords.append(rank % n)
        rank //= n
    return tuple(reversed(coords))


def make_layout(
    local_spatial: list[tuple[int, ...]], sharded_axes: tuple[int, ...], grid: tuple[int, ...]
) -> tuple[Layout | None, str]:
    """The layout from every rank's local spatial shape, or ``(None, why)`` when the shapes do not tile
    the grid (ranks in one grid slice must agree on that axis' size, and every other axis is whole)."""
    world, rank_dims = len(local_spatial), len(local_spatial[0])
    coords = [grid_coords(r, grid) for r in range(world)]
    spatial, edges = [], {}
    for axis in range(rank_dims):
        if axis not in sharded_axes:
            sizes = {shape[axis] for shape in local_spatial}
            if len(sizes) > 1:
                return None, f"unsharded spatial axis {axis} must have one size on every rank; got {sorted(sizes)}"
            spatial.append(sizes.pop())
            continue
        t = sharded_axes.index(axis)
        per_coord: list[set[int]] = [set() for _ in range(grid[t])]
        for r, shape in enumerate(local_spatial):
            per_coord[coords[r][t]].add(shape[axis])
        for c, sizes in enumerate(per_coord):
            if len(sizes) > 1:
                return None, (
                    f"ranks at grid position {c} along sharded axis {axis} must have one size on that axis; "
                    f"got {sorted(sizes)}"
                )
        sizes_t = [s.pop() for s in per_coord]
        if min(sizes_t) < 1:
            return None, f"every rank must hold at least 1 token along sharded axis {axis}; got sizes {sizes_t}"
        offsets = [0, *itertools.accumulate(sizes_t)]
        edges[axis] = offsets
        spatial.append(offsets[-1])
    bounds = tuple(
        tuple(
            (edges[axis][coords[r][sharded_axes.index(axis)]], edges[axis][coords[r][sharded_axes.index(axis)] + 1])
            if axis in edges
            else (0, spatial[axis])
            for axis in range(rank_dims)
        )
        for r in range(world)
    )
    return Layout(tuple(spatial), sharded_axes, grid, bounds), ""


@dataclass(frozen=True)
class Transfer:
    """One block between this rank and ``peer``: per spatial axis, the positions (in the extended grid
    of the receiver for receives, in the sender's local shard for sends)."""

    peer: int
    index: tuple[tuple[int, ...], ...]

    @property
    def sites(self) -> int:
        return math.prod(len(ix) for ix in self.index)


@dataclass(frozen=True)
class RankPlan:
    """Everything one rank does: per-axis plans, and the blocks it receives and sends."""

    rank: int
    axes: tuple[AxisPlan, ...]
    recv: tuple[Transfer, ...]
    send: tuple[Transfer, ...]

    @property
    def extended(self) -> tuple[int, ...]:
        return tuple(a.hi - a.lo for a in self.axes)

    @property
    def offset(self) -> tuple[int, ...]:
        """Where the owned shard starts inside the extended grid."""
        return tuple(a.start - a.lo for a in self.axes)

    @functools.cached_property  # read by every exchange; the plan itself is cached (rank_plan)
    def unwritten(self) -> tuple[tuple[int, ...], ...] | None:
        """Per axis, the extended grid's positions holding neither a needed key nor an owned one. The
        exchange writes the rank's shard and every needed key (the owners tile the grid), so when those
        sites form the product of the per-axis sets these slabs are all it leaves unwritten, and only
        they need zeros; None where they do not (the whole grid is zeroed first)."""
        covered, needed, owned, both = [], 1, 1, 1
        for a in self.axes:
            need = {j - a.lo for j in a.needed}
            own = set(range(a.start - a.lo, a.stop - a.lo))
            covered.append(need | own)
            needed, owned, both = needed * len(need), owned * len(own), both * len(need & own)
        if needed + owned - both != math.prod(len(c) for c in covered):
            return None
        return tuple(tuple(p for p in range(a.hi - a.lo) if p not in c) for a, c in zip(self.axes, covered))

    @property
    def recv_sites(self) -> int:
        return sum(t.sites for t in self.recv)

    @property
    def send_sites(self) -> int:
        return sum(t.sites for t in self.send)


def _axis_plans(layout: Layout, params, rank: int) -> tuple[AxisPlan, ...]:
    return tuple(
        axis_plan(layout.spatial[x], k, d, s, c, *layout.bounds[rank][x]) for x, (k, d, s, c) in enumerate(zip(*params))
    )


@functools.lru_cache(maxsize=256)
def rank_plan(layout: Layout, params: tuple[tuple, tuple, tuple, tuple], rank: int) -> RankPlan:
    """The plan of ``rank``; ``params`` = (kernel_size, dilation, stride, is_causal), one entry per axis."""
    plans = [_axis_plans(layout, params, r) for r in range(layout.world)]
    mine, own = plans[rank], layout.bounds[rank]

    def block(needed_by: tuple[AxisPlan, ...], owner: int, shift) -> tuple[tuple[int, ...], ...] | None:
        index = []
        for x, ap in enumerate(needed_by):
            a, b = layout.bounds[owner][x]
            ix = tuple(j - shift[x] for j in ap.needed if a <= j < b)
            if not ix:
                return None
            index.append(ix)
        return tuple(index)

    recv, send = [], []
    for peer in range(layout.world):
        if peer == rank:
            continue
        r = block(mine, peer, [ap.lo for ap in mine])
        if r is not None:
            recv.append(Transfer(peer, r))
        s = block(plans[peer], rank, [a for a, _ in own])
        if s is not None:
            send.append(Transfer(peer, s))
    return RankPlan(rank, mine, tuple(recv), tuple(send))
