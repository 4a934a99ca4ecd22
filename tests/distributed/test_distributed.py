"""natten.distributed against the single-process op and the oracle, in spawned worlds of 2, 3 and 4
ranks (gloo on the CPU; NCCL when the machine has a GPU per rank). Each world is spawned once and runs
every case of its size; the tests below read its results."""

from __future__ import annotations

import math

import pytest
import torch
from dist_cases import (
    BAD_CALLS,
    SUBGROUP_CASES,
    SUBGROUP_MEMBERS,
    cases_for,
    check_cases,
    heads_received,
    needed_halo_sites,
    owners_of_needed_keys,
    random_cases,
)

import natten.distributed as nd
from natten.distributed.launch import spawn
from natten.distributed.plan import make_layout
from natten.functional.validation import FusedShapes

WORLDS = (2, 3, 4)
CASES = {w: cases_for(w) for w in WORLDS}
BAD_WORLD = 2
TOL = {8: 1e-11, 4: 2e-4}  # by itemsize: float64 (CPU) or float32 (GPU)


@pytest.fixture(scope="module")
def outcome():
    cache: dict[int, list] = {}

    def get(world: int) -> list:
        if world not in cache:
            bad = list(BAD_CALLS) if world == BAD_WORLD else []
            cache[world] = spawn(world, check_cases, CASES[world], bad)
        return cache[world]

    return get


def _params(world_cases):
    return [pytest.param(w, c, id=f"w{w}-{c.id}") for w, cases in world_cases.items() for c in cases]


def _results(outcome, world, case) -> list[dict]:
    return _case_results(outcome(world), case)


def _case_results(ranks: list[dict], case) -> list[dict]:
    results = [rank["cases"][case.id] for rank in ranks]
    for rank, r in enumerate(results):
        assert "failure" not in r, f"rank {rank}:\n{r.get('failure')}"
    return results


@pytest.mark.parametrize("world, case", _params(CASES))
def test_matches_single_process_and_oracle(outcome, world, case):
    """Outputs, LSE and every gradient (q, k, v on the shard; rpb, additional KV whole) equal the
    single-process natten op and the float64 oracle, on every rank."""
    _assert_exact(case, _results(outcome, world, case))


def _assert_exact(case, results: list[dict]) -> None:
    for rank, r in enumerate(results):
        tol = TOL[r["itemsize"]]
        bad = {name: err for name, err in r["errors"].items() if not err <= tol}
        assert not bad, f"rank {rank}: errors above {tol}: {bad}"
        expected = {"out", "dquery", "dkey", "dvalue"} | ({"lse"} if case.lse else set())
        expected |= {"drpb"} if case.rpb else set()
        expected |= {"dadditional_keys", "dadditional_values"} if case.additional else set()
        assert {n.split(" ")[0] for n in r["errors"]} == expected


def _predicted(case, method: str, itemsize: int, lse_itemsize: int = 0) -> list[tuple[int, int]]:
    """natten.distributed.predicted for this case (what method="auto" decides by)."""
    local = [tuple(b - a for a, b in case.box(r)) for r in range(case.world)]
    layout, _ = make_layout(local, case.sharded_axes, case.grid)
    shapes = FusedShapes(case.heads, case.kv_heads, case.head_dim, case.head_dim_v, case.additional, 1.0)
    params = (case.kernel_size, case.dilation, case.stride, case.is_causal)
    return nd.predicted(method, layout, params, case.batch, shapes, itemsize, lse_itemsize)


def _exchanges(r, direction, prefix):
    return [e for e in r["exchanges"] if e[1] == direction and e[0].startswith(prefix)]


@pytest.mark.parametrize("world, case", _params({w: [c for c in cs if c.method == "halo"] for w, cs in CASES.items()}))
def test_halo_receives_exactly_the_needed_keys(outcome, world, case):
    """Each rank receives exactly the k/v sites its queries attend and it does not own (counted here
    by brute force from the oracle's slot tables): no all-gather in disguise; the backward returns the
    same blocks to their owners."""
    _assert_halo_bytes(case, _results(outcome, world, case))


def _assert_halo_bytes(case, results: list[dict]) -> None:
    site = case.batch * case.kv_heads * (case.head_dim + case.head_dim_v)
    for rank, r in enumerate(results):
        ((_, _, sent, received, peers),) = _exchanges(r, "forward", "halo")
        assert received == needed_halo_sites(case, rank) * site * r["itemsize"], f"rank {rank}"
        # windows reaching past the neighbouring shards: every owner of a needed key sends, no one else
        assert peers == owners_of_needed_keys(case, rank), f"rank {rank}"
        assert (sent, received) == _predicted(case, "halo", r["itemsize"])[rank]
        ((_, _, back_sent, back_received, _),) = _exchanges(r, "backward", "halo")
        assert (back_sent, back_received) == (received, sent), f"rank {rank}"
    total_sent = sum(_exchanges(r, "forward", "halo")[0][2] for r in results)
    total_received = sum(_exchanges(r, "forward", "halo")[0][3] for r in results)
    assert total_sent == total_received


@pytest.mark.parametrize("world, case", _params({w: [c for c in cs if c.method == "heads"] for w, cs in CASES.items()}))
def test_heads_bytes(outcome, world, case):
    """The head-parallel forward receives q, k/v of the other ranks' tokens for its heads and its own
    tokens' output (and LSE) of the other heads: nothing more."""
    for rank, r in enumerate(_results(outcome, world, case)):
        sent = sum(e[2] for e in _exchanges(r, "forward", "heads"))
        received = sum(e[3] for e in _exchanges(r, "forward", "heads"))
        assert received == heads_received(case, rank, r["itemsize"], r["lse_itemsize"]), f"rank {rank}"
        assert (sent, received) == _predicted(case, "heads", r["itemsize"], r["lse_itemsize"])[rank]
        assert not _exchanges(r, "forward", "halo")


@pytest.mark.parametrize("world, case", _params({w: [c for c in cs if c.method == "auto"] for w, cs in CASES.items()}))
def test_auto_takes_the_cheaper_method(outcome, world, case):
    """``method="auto"`` runs the method whose bytes (sent + received, forward) on the busiest rank are
    fewer, heads only when the group's size divides both head counts; the bytes it moved are those
    predicted, and the halo's prediction is the brute-force count (checked above)."""
    results = _results(outcome, world, case)
    ran = {e[0].split(":")[0] for r in results for e in r["exchanges"] if e[1] == "forward"}
    itemsize, lse_itemsize = results[0]["itemsize"], results[0]["lse_itemsize"]
    cost = {"halo": max(s + r for s, r in _predicted(case, "halo", itemsize))}
    if case.heads % world == 0 and case.kv_heads % world == 0:
        cost["heads"] = max(s + r for s, r in _predicted(case, "heads", itemsize, lse_itemsize))
    expected = "heads" if cost.get("heads", math.inf) < cost["halo"] else "halo"
    assert ran == {expected}
    moved = [sum(e[2] + e[3] for e in _exchanges(r, "forward", expected)) for r in results]
    assert max(moved) == cost[expected]


@pytest.mark.parametrize("world", WORLDS)
def test_module_matches_single_process(outcome, world):
    """DistributedNeighborhoodAttention*D on each shard equals NeighborhoodAttention*D on the whole grid
    (same state dict): output, input gradient, rpb gradient; the local projections' gradients summed
    over the group equal the single-process ones."""
    for rank, r in enumerate(outcome(world)):
        assert "failure" not in r["module"], f"rank {rank}:\n{r['module']['failure']}"
        errors = r["module"]["errors"]
        assert len(errors) == 7 and max(errors.values()) <= TOL[r["module"]["itemsize"]], f"rank {rank}: {errors}"


@pytest.mark.parametrize("world", WORLDS)
def test_dtensor_inputs(outcome, world):
    """DTensor q/k/v on a DeviceMesh (1-D with uneven and thin chunks; 2 x 2 over two axes): DTensor
    results with the inputs' placements, equal to the single-process op, gradients included."""
    for rank, r in enumerate(outcome(world)):
        assert "failure" not in r["dtensor"], f"rank {rank}:\n{r['dtensor']['failure']}"
        errors = r["dtensor"]["errors"]
        assert len(errors) == 2 * 8 and max(errors.values()) <= TOL[r["dtensor"]["itemsize"]], f"rank {rank}: {errors}"


@pytest.mark.extended
@pytest.mark.parametrize("world", (5, 6, 8))
def test_random_cases_in_larger_worlds(world):
    """Worlds the CI tier does not spawn, with random geometry, grids over up to three axes, features
    and methods: exact on every rank, and the halo bytes are the needed keys."""
    cases = random_cases(world, 25, seed=1)
    ranks = spawn(world, check_cases, cases, [])
    for case in cases:
        results = _case_results(ranks, case)
        _assert_exact(case, results)
        if case.method == "halo":
            _assert_halo_bytes(case, results)


@pytest.mark.parametrize("world", [w for w in WORLDS if w >= 3])
def test_subgroup(outcome, world):
    """A process group of global ranks 1 and 2 (group ranks 0 and 1): both methods, exact, and the
    exchanges name peers by their rank in the group."""
    ranks = outcome(world)
    for member in SUBGROUP_MEMBERS:
        results = ranks[member]["subgroup"]
        assert set(results) == {c.id for c in SUBGROUP_CASES}
        for case_id, r in results.items():
            assert "failure" not in r, f"rank {member} {case_id}:\n{r['failure']}"
            assert max(r["errors"].values()) <= TOL[r["itemsize"]], f"rank {member} {case_id}: {r['errors']}"
            assert r["exchanges"] and all(set(e[4]) <= {0, 1} for e in r["exchanges"])
    assert all(not ranks[r]["subgroup"] for r in range(world) if r not in SUBGROUP_MEMBERS)


BAD = {
    "sharded_axes out of range": ("ValueError", "sharded_axes must be distinct spatial axis indices in [0, 2)"),
    "sharded_axes not an int": ("TypeError", "sharded_axes must be an int"),
    "grid missing": ("ValueError", "grid (ranks along each sharded axis"),
    "grid product": ("ValueError", "grid must multiply to the group's size 2; got grid=(2, 2)"),
    "method": ("ValueError", "method must be one of 'halo', 'heads', 'auto'; got 'ring'"),
    "heads not divisible": ("ValueError", "needs heads (3) and kv_heads (3) divisible by the group's size (2)"),
    "empty shard": ("ValueError", "every rank must hold at least 1 token along sharded axis 0"),
    "unsharded axis differs": ("ValueError", "unsharded spatial axis 1 must have one size on every rank; got [5, 6]"),
    "kernel differs": (
        "ValueError",
        "kernel_size must be the same on every rank of the group; got rank 0: (3,), rank 1: (5,)",
    ),
    "dtype differs": (
        "ValueError",
        "dtype (of query, key and value) must be the same on every rank of the group; "
        "got rank 0: torch.float64, rank 1: torch.float32",
    ),
    "grid too small for the window": (
        "ValueError",
        "= 5 > 4 in query of shape (1, 4, 2, 4) (expected layout [batch, length, heads, head_dim]; if a heads axis "
        "sits where a spatial axis belongs, permute the tensor) [checked on the grid the shards assemble: "
        "spatial (4,), from local shards rank 0: (2,), rank 1: (2,)]",
    ),
    "group type": ("TypeError", "group must be a torch.distributed.ProcessGroup or None; got str"),
    "rpb on one rank": ("ValueError", "rpb must be the same on every rank of the group"),
    "query and key shards differ": ("ValueError", "query, key and value shards must share batch and spatial axes"),
    "module attn_drop": ("ValueError", "attn_drop must be 0 in DistributedNeighborhoodAttention1D"),
    "dtensor with sharded_axes": ("ValueError", "group, sharded_axes and grid come from the DTensors' mesh"),
    "dtensor replicated": ("ValueError", "must be sharded with one Shard(spatial dim) per mesh dimension"),
    "dtensor key plain": ("TypeError", "key must be a DTensor on query's mesh"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_inputs_raise_on_every_rank(outcome, name):
    """Bad input raises a clear error on every rank (none is left waiting in a collective)."""
    rejected = [rank["bad"][name] for rank in outcome(BAD_WORLD)]
    if name == "one rank's dtype":  # the failing rank says why, the other names it
        assert rejected[1][0] == "TypeError" and "value must have the dtype of query" in rejected[1][1]
        assert rejected[0] == ("ValueError", rejected[0][1]) and "rank(s) [1] of the process group" in rejected[0][1]
        return
    kind, message = BAD[name]
    for rank, got in enumerate(rejected):
        assert got is not None, f"rank {rank} did not raise"
        assert got[0] == kind and message in got[1], f"rank {rank}: {got}"


def test_needs_an_initialized_group():
    import natten.distributed as nd

    q = torch.randn(1, 8, 2, 4)
    with pytest.raises(RuntimeError, match="init_process_group"):
        nd.na1d(q, q, q, 3)
