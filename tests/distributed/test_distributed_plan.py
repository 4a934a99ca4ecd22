"""The halo plan (pure Python, no processes): exact windows and exactly the attended keys, checked
exhaustively on small axes against the oracle's slot tables; the exactness check itself; transfers
that tile each rank's needed box."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from dist_cases import DCase, needed_halo_sites
from natten_legacy.reference import neighborhood_slots

from natten.distributed.plan import axis_plan, is_exact, make_layout, rank_plan


def _axes(max_length: int):
    for length in range(2, max_length + 1):
        for k in range(2, length + 1):
            for d in range(1, length // k + 1):
                for s in range(1, k + 1):
                    for causal in (False, True):
                        yield length, k, d, s, causal


def test_axis_plan_exhaustive():
    """Every axis up to 11 tokens, every parameter set, every owned range: the needed keys are the union
    of the owned queries' oracle slots, the derived range is exact without widening, and it meets the
    alignment and size conditions."""
    checked = 0
    for length, k, d, s, causal in _axes(11):
        keys, valid = neighborhood_slots(length, k, d, s, causal)
        for a in range(length):
            for b in range(a + 1, length + 1):
                plan = axis_plan(length, k, d, s, causal, a, b)
                assert plan.needed == tuple(sorted(set(keys[a:b][valid[a:b]].tolist())))
                assert plan.widened == 0
                assert plan.lo % (d * s if s > 1 else 1) == 0 and plan.hi - plan.lo >= k * d
                assert plan.lo <= min(a, *plan.needed) and plan.hi >= max(b, plan.needed[-1] + 1)
                checked += 1
    assert checked > 30000


def test_is_exact_rejects_each_broken_condition():
    # stride blocks misaligned: lo = 1 with stride 2 shifts the block leaders
    assert is_exact(12, 3, 1, 2, False, 4, 8, 0, 12)
    assert not is_exact(12, 3, 1, 2, False, 4, 8, 1, 12)
    # with dilation, lo must be a multiple of dilation * stride: 2 shifts the blocks of both groups
    assert not is_exact(16, 3, 2, 2, False, 6, 10, 2, 16)
    assert is_exact(16, 3, 2, 2, False, 6, 10, 4, 16)
    # causal: the last block's leader cut off changes where the window starts
    plan = axis_plan(20, 5, 3, 2, True, 7, 13)
    assert plan.hi > max(plan.needed) + 1
    assert not is_exact(20, 5, 3, 2, True, 7, 13, plan.lo, max(plan.needed) + 1)
    # shorter than one window
    assert not is_exact(12, 5, 1, 1, False, 0, 3, 0, 4)
    # at the global borders the whole axis is always exact
    assert all(is_exact(9, 3, 1, s, c, 2, 5, 0, 9) for s in (1, 2, 3) for c in (False, True))


@pytest.mark.parametrize("seed", range(40))
def test_rank_plan_transfers_tile_the_needed_box(seed):
    """Random grids of 2-6 ranks: what a rank receives is exactly the needed sites it does not own
    (brute force over the oracle's slots), each block comes from the rank that owns it, and every
    receive has the matching send on the peer."""
    rng = random.Random(seed)
    rank_dims = rng.choice([1, 2, 3])
    kernel = tuple(rng.choice([2, 3, 5]) for _ in range(rank_dims))
    dil = tuple(rng.choice([1, 2]) for _ in range(rank_dims))
    stride = tuple(rng.randint(1, k) for k in kernel)
    causal = tuple(rng.random() < 0.3 for _ in range(rank_dims))
    spatial = tuple(k * d + rng.randint(2, 6) for k, d in zip(kernel, dil))
    axes = tuple(sorted(rng.sample(range(rank_dims), rng.randint(1, rank_dims))))
    grid = tuple(rng.randint(1, min(3, spatial[a])) for a in axes)
    shards = tuple(_split(spatial[a], g, rng) for a, g in zip(axes, grid))
    case = DCase(spatial, kernel, shards, axes, dil, stride, causal)
    world = case.world
    local = [tuple(b - a for a, b in case.box(r)) for r in range(world)]
    layout, why = make_layout(local, axes, grid)
    assert layout is not None, why
    assert layout.spatial == spatial and all(layout.bounds[r] == case.box(r) for r in range(world))
    params = (kernel, dil, stride, causal)
    plans = [rank_plan(layout, params, r) for r in range(world)]
    for me, plan in enumerate(plans):
        assert plan.recv_sites == needed_halo_sites(case, me)
        for t in plan.recv:
            origin = [ap.lo for ap in plan.axes]
            sites = itertools.product(*(tuple(j + o for j in ix) for ix, o in zip(t.index, origin)))
            box = layout.bounds[t.peer]
            assert all(all(a <= j < b for j, (a, b) in zip(site, box)) for site in sites)
            (match,) = [u for u in plans[t.peer].send if u.peer == me]
            assert match.sites == t.sites
        assert sum(p.send_sites for p in plans) == sum(p.recv_sites for p in plans)
        _check_every_site_is_written(plan, layout.local_shape(me))


def _check_every_site_is_written(plan, local_shape):
    """The exchange leaves no site of the extended grid unwritten (a garbage NaN there would reach the
    products of a key tile): zeroed slabs (``plan.unwritten``; the whole grid where None), the shard,
    and the received blocks cover it."""
    written = torch.zeros(plan.extended, dtype=torch.bool)
    if plan.unwritten is None:
        written[...] = True
    for axis, positions in enumerate(plan.unwritten or ()):
        index = [slice(None)] * len(plan.extended)
        index[axis] = list(positions)
        written[tuple(index)] = True
    written[tuple(slice(o, o + n) for o, n in zip(plan.offset, local_shape))] = True
    for t in plan.recv:
        written[torch.meshgrid(*(torch.tensor(ix) for ix in t.index), indexing="ij")] = True
    assert written.all(), f"rank {plan.rank}: {int((~written).sum())} sites unwritten"


def _split(n, parts, rng):
    cuts = sorted(rng.sample(range(1, n), parts - 1))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, n]))


def test_make_layout_rejects_shapes_that_do_not_tile():
    assert make_layout([(4, 5), (3, 6)], (0,), (2,)) == (
        None,
        "unsharded spatial axis 1 must have one size on every rank; got [5, 6]",
    )
    layout, why = make_layout([(2, 3), (2, 4), (5, 3), (5, 4)], (0, 1), (2, 2))
    assert why == "" and layout.spatial == (7, 7) and layout.bounds[3] == ((2, 7), (3, 7))
    assert make_layout([(2, 3), (2, 4), (5, 4), (5, 3)], (0, 1), (2, 2))[0] is None
