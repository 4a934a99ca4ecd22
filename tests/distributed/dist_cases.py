"""The distributed test problems and what each rank runs on them (inside a spawned world).

A case is a global problem plus how it is cut: ``shards[t]`` lists the sizes along sharded axis
``sharded_axes[t]`` (one per grid position), so the grid is ``len(shards[t])`` ranks along that axis.
Every rank builds the same global inputs from the case's seed, runs the single-process op and the
oracle on the whole grid, and the distributed op on its shard, then reports errors and bytes.
"""

from __future__ import annotations

import itertools
import math
import random
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist
from natten_legacy.reference import na_reference, neighborhood_slots

import natten
import natten.distributed as nd
from cases import Case
from helpers import case_tensors


@dataclass(frozen=True)
class DCase:
    spatial: tuple[int, ...]
    kernel_size: tuple[int, ...]
    shards: tuple[tuple[int, ...], ...]
    sharded_axes: tuple[int, ...] = (0,)
    dilation: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    is_causal: tuple[bool, ...] | None = None
    method: str = "halo"
    rpb: bool = False
    additional: int = 0
    heads: int = 2
    kv_heads: int = 2
    head_dim: int = 4
    head_dim_v: int = 4
    batch: int = 1
    scale: float | None = None
    lse: bool = True  # return_lse, and the LSE in the loss
    seed: int = 0

    def __post_init__(self):
        one = (1,) * len(self.spatial)
        for name in ("dilation", "stride"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, one)
        if self.is_causal is None:
            object.__setattr__(self, "is_causal", (False,) * len(self.spatial))
        for t, axis in enumerate(self.sharded_axes):
            assert sum(self.shards[t]) == self.spatial[axis], (self.shards, self.spatial)

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.shards)

    @property
    def world(self) -> int:
        return math.prod(self.grid)

    @property
    def problem(self) -> Case:
        """The global problem, as the single-process tests describe it."""
        return Case(
            self.spatial, self.kernel_size, self.dilation, self.stride, self.is_causal, self.rpb, self.additional,
            self.heads, self.kv_heads, self.head_dim, self.head_dim_v, self.batch,
        )  # fmt: skip

    @property
    def id(self) -> str:
        parts = [self.problem.id.removesuffix("-f64")]
        parts += [f"ax{a}[{','.join(map(str, s))}]" for a, s in zip(self.sharded_axes, self.shards)]
        if self.scale is not None:
            parts.append(f"scale{self.scale}")
        if not self.lse:
            parts.append("no-lse")
        parts.append(self.method)
        return "-".join(parts)

    def box(self, rank: int) -> tuple[tuple[int, int], ...]:
        """Rank ``rank``'s owned ``(start, stop)`` per spatial axis (row-major grid, as documented)."""
        coords = []
        for n in reversed(self.grid):
            coords.append(rank % n)
            rank //= n
        coords.reverse()
        out = []
        for axis, n in enumerate(self.spatial):
            if axis in self.sharded_axes:
                t = self.sharded_axes.index(axis)
                a = sum(self.shards[t][: coords[t]])
                out.append((a, a + self.shards[t][coords[t]]))
            else:
                out.append((0, n))
        return tuple(out)


def _needed_sites(case: DCase, rank: int) -> set[tuple[int, ...]]:
    """Brute force, from the oracle's slot tables: every key site any owned query attends (the test's
    own enumeration, independent of natten.distributed.plan)."""
    box = case.box(rank)
    slots = []
    for axis, n in enumerate(case.spatial):
        keys, valid = neighborhood_slots(
            n, case.kernel_size[axis], case.dilation[axis], case.stride[axis], case.is_causal[axis]
        )
        slots.append([keys[i][valid[i]].tolist() for i in range(n)])
    seen = set()
    for query in itertools.product(*(range(a, b) for a, b in box)):
        seen.update(itertools.product(*(slots[axis][i] for axis, i in enumerate(query))))
    return seen


def _inside(site, box) -> bool:
    return all(a <= j < b for j, (a, b) in zip(site, box))


def needed_halo_sites(case: DCase, rank: int) -> int:
    """Key sites the rank's queries attend and it does not own."""
    box = case.box(rank)
    return sum(1 for site in _needed_sites(case, rank) if not _inside(site, box))


def owners_of_needed_keys(case: DCase, rank: int) -> tuple[int, ...]:
    """The other ranks that own a key this rank's queries attend."""
    sites = _needed_sites(case, rank)
    others = [r for r in range(case.world) if r != rank]
    return tuple(r for r in others if any(_inside(site, case.box(r)) for site in sites))


def heads_received(case: DCase, rank: int, itemsize: int, lse_itemsize: int) -> int:
    """Bytes a rank receives in the head-parallel forward (q, k/v, out, lse all-to-alls), by hand."""
    world = case.world
    tokens = [math.prod(b - a for a, b in case.box(r)) for r in range(world)]
    others = sum(tokens) - tokens[rank]
    h, hk = case.heads // world, case.kv_heads // world
    qkv = others * (h * case.head_dim + hk * (case.head_dim + case.head_dim_v)) * itemsize
    back = (world - 1) * tokens[rank] * h * (case.head_dim_v * itemsize + lse_itemsize)
    return case.batch * (qkv + back)


# --------------------------------------------------------------------------------------------------
# inside the world
# --------------------------------------------------------------------------------------------------


def _inputs(case: DCase, device, dtype) -> dict:
    g = torch.Generator().manual_seed(case.seed)
    b, s = case.batch, case.spatial

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    api_names = {"q": "query", "k": "key", "v": "value"}
    t = {api_names.get(n, n): x for n, x in case_tensors(case, randn).items()}
    upstream = (randn(b, *s, case.heads, case.head_dim_v), randn(b, *s, case.heads))
    return t, upstream


_SHARDED = ("query", "key", "value")


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference, relative to the reference's largest magnitude when that exceeds 1 (sums
    over many queries, such as rpb gradients, grow with the problem)."""
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp(min=1)).item()


_OPS = {1: nd.na1d, 2: nd.na2d, 3: nd.na3d}
_SINGLE = {1: natten.functional.na1d, 2: natten.functional.na2d, 3: natten.functional.na3d}


def _run(fn, inputs: dict, upstream, return_lse: bool, **kwargs):
    """Outputs and the gradients of every input for the loss ``<out, up_out> (+ <lse, up_lse>)``."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    rest = {n: x for n, x in leaves.items() if n not in _SHARDED}
    result = fn(*(leaves[n] for n in _SHARDED), **rest, **kwargs, return_lse=return_lse)
    out, lse = result if return_lse else (result, None)
    loss = (out * upstream[0]).sum() + (0 if lse is None else (lse * upstream[1]).sum())
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out.detach(), None if lse is None else lse.detach(), dict(zip(leaves, grads))


def _one_case(case: DCase, rank: int, device, dtype, group=None) -> dict:
    """``rank``: this process's rank in ``group`` (None: the default group)."""
    inputs, upstream = _inputs(case, device, dtype)
    params = dict(kernel_size=case.kernel_size, dilation=case.dilation, stride=case.stride, is_causal=case.is_causal)
    single = _run(_SINGLE[case.rank], inputs, upstream, case.lse, **params, scale=case.scale)
    f64 = {n: x.double() for n, x in inputs.items()}
    oracle = _run(na_reference, f64, [u.double() for u in upstream], case.lse, **params, scale=case.scale)
    owned = (slice(None), *(slice(a, b) for a, b in case.box(rank)))
    local = {n: (x[owned] if n in _SHARDED else x) for n, x in inputs.items()}
    local_up = [u[owned] for u in upstream]
    with nd.collect() as log:
        out, lse, grads = _run(
            _OPS[case.rank],
            local,
            local_up,
            case.lse,
            **params,
            scale=case.scale,
            sharded_axes=case.sharded_axes,
            grid=case.grid,
            method=case.method,
            group=group,
        )
    errors = {}
    for ref_name, (r_out, r_lse, r_grads) in (("natten", single), ("oracle", oracle)):
        pairs = [("out", out, r_out[owned])] + ([("lse", lse, r_lse[owned])] if case.lse else [])
        pairs += [(f"d{n}", grads[n], r_grads[n][owned] if n in _SHARDED else r_grads[n]) for n in grads]
        for name, got, want in pairs:
            errors[f"{name} vs {ref_name}"] = _error(got, want)
    return {
        "errors": errors,
        "exchanges": [(e.what, e.direction, e.sent_bytes, e.received_bytes, e.peers) for e in log],
        "itemsize": torch.empty((), dtype=dtype).element_size(),
        "lse_itemsize": 0 if lse is None else lse.element_size(),  # 0: no LSE transfer
    }


MODULES = {
    # world: (Module rank, global spatial, kernel, dilation, sharded_axes, grid, shards per sharded axis)
    2: (1, (11,), 7, 1, (0,), (2,), ((1, 10),)),
    3: (2, (9, 11), 5, (1, 2), (0,), (3,), ((4, 1, 4),)),
    4: (3, (6, 5, 7), 3, 1, (0, 2), (2, 2), ((2, 4), (5, 2))),
}


def _module_case(rank: int, world: int, device, dtype) -> dict:
    """The Distributed Module on its shard vs NeighborhoodAttention*D (same weights) on the whole grid:
    output, input gradient, rpb gradient, and the projections' gradients summed over the group."""
    dims, spatial, kernel, dil, axes, grid, shards = MODULES[world]
    case = DCase(spatial, (kernel,) * dims, shards, axes)
    torch.manual_seed(0)
    single_cls = getattr(natten, f"NeighborhoodAttention{dims}D")
    dist_cls = getattr(nd, f"DistributedNeighborhoodAttention{dims}D")
    single = single_cls(16, 4, kernel, dil, rel_pos_bias=True).to(device=device, dtype=dtype)
    sharded = dist_cls(16, 4, kernel, dil, rel_pos_bias=True, sharded_axes=axes, grid=grid).to(device, dtype)
    sharded.load_state_dict(single.state_dict())
    x = torch.randn(2, *spatial, 16, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(2, *spatial, 16, device=device, dtype=dtype)
    owned = (slice(None), *(slice(a, b) for a, b in case.box(rank)))
    ref = single(x)
    (ref * up).sum().backward()
    x_local = x.detach()[owned].clone().requires_grad_()
    out = sharded(x_local)
    (out * up[owned]).sum().backward()
    errors = {
        "out": _error(out, ref[owned]),
        "dx": _error(x_local.grad, x.grad[owned]),
        "drpb": _error(sharded.rpb.grad, single.rpb.grad),
    }
    for name in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):
        grad = sharded.get_parameter(name).grad.clone()
        dist.all_reduce(grad)
        errors[f"d{name}"] = _error(grad, single.get_parameter(name).grad)
    return {"errors": errors, "itemsize": x.element_size()}


# world: (global spatial, kernel, placements' spatial dims, mesh shape): torch.chunk shards, uneven
DTENSORS = {
    2: ((5, 9), (3, 5), (0,), (2,)),
    3: ((7, 6), (5, 3), (0,), (3,)),  # chunks 3, 3, 1: a shard thinner than the window
    4: ((5, 7), (3, 3), (0, 1), (2, 2)),
}


def _dtensor_case(rank: int, world: int, device, dtype) -> dict:
    """DTensor q/k/v (Shard placements on a DeviceMesh), rpb as a replicated DTensor, additional KV as
    plain tensors, both methods: results are DTensors equal to the single-process op, and so are the
    gradients."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    spatial, kernel, dims, mesh_shape = DTENSORS[world]
    mesh = init_device_mesh(device.type, mesh_shape)
    placements = [Shard(1 + d) for d in dims]
    errors = {}
    for method in ("halo", "heads"):
        case = DCase(
            spatial, kernel, tuple((n,) for n in spatial), rpb=True, additional=2, heads=world * 2, kv_heads=world
        )
        inputs, upstream = _inputs(case, device, dtype)
        single = _run(_SINGLE[case.rank], inputs, upstream, True, kernel_size=kernel)
        leaves = {n: x.detach().clone() for n, x in inputs.items()}
        for n in _SHARDED:
            leaves[n] = distribute_tensor(leaves[n], mesh, placements)
        leaves["rpb"] = distribute_tensor(leaves["rpb"], mesh, [Replicate()] * len(dims))
        for x in leaves.values():
            x.requires_grad_()
        rest = {n: x for n, x in leaves.items() if n not in _SHARDED}
        out, lse = _OPS[case.rank](*(leaves[n] for n in _SHARDED), kernel, **rest, return_lse=True, method=method)
        assert tuple(out.placements) == tuple(placements) and tuple(lse.placements) == tuple(placements)
        loss = (out.full_tensor() * upstream[0]).sum() + (lse.full_tensor() * upstream[1]).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        got = {"out": out.full_tensor(), "lse": lse.full_tensor()}
        got.update({f"d{n}": g.full_tensor() if hasattr(g, "full_tensor") else g for n, g in zip(leaves, grads)})
        want = {"out": single[0], "lse": single[1], **{f"d{n}": g for n, g in single[2].items()}}
        errors.update({f"{n} {method}": _error(got[n], want[n]) for n in want})
    return {"errors": errors, "itemsize": torch.empty((), dtype=dtype).element_size()}


def check_cases(rank: int, world: int, device, cases: list[DCase], bad: list[str]) -> dict:
    """Runs every case, then every bad-input call, on this rank; never raises (a failing case reports
    its traceback, so the other cases still run)."""
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    results = {}
    for case in cases:
        try:
            results[case.id] = _one_case(case, rank, device, dtype)
        except Exception:
            results[case.id] = {"failure": traceback.format_exc()}
    try:
        module = _module_case(rank, world, device, dtype)
    except Exception:
        module = {"failure": traceback.format_exc()}
    try:
        dtensors = _dtensor_case(rank, world, device, dtype) if world in DTENSORS else None
    except Exception:
        dtensors = {"failure": traceback.format_exc()}
    subgroup = {}
    if world >= 3:  # a group of global ranks 1 and 2: group ranks differ from global ranks
        group = dist.new_group(list(SUBGROUP_MEMBERS))
        for case in SUBGROUP_CASES if rank in SUBGROUP_MEMBERS else ():
            try:
                subgroup[case.id] = _one_case(case, SUBGROUP_MEMBERS.index(rank), device, dtype, group)
            except Exception:
                subgroup[case.id] = {"failure": traceback.format_exc()}
        dist.barrier()
    rejected = {}
    for name in bad:
        try:
            BAD_CALLS[name](rank, world, device)
            rejected[name] = None
        except Exception as exc:
            rejected[name] = (type(exc).__name__, str(exc))
        dist.barrier()
    return {"cases": results, "module": module, "dtensor": dtensors, "subgroup": subgroup, "bad": rejected}


# --------------------------------------------------------------------------------------------------
# bad inputs: each runs on every rank of a world of 2 and must raise on every rank
# --------------------------------------------------------------------------------------------------


def _qkv(shape, device, heads=2, dtype=torch.float64):
    return [torch.randn(*shape, heads, 4, dtype=dtype, device=device) for _ in range(3)]


def _dtensors(device, placement: str, count: int = 3):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    place = Shard(1) if placement == "shard" else Replicate()
    return [distribute_tensor(t, mesh, [place]) for t in _qkv((1, 6), device)[:count]]


def _module_with_dropout(rank, world, device):
    nd.DistributedNeighborhoodAttention1D(8, 2, 3, attn_drop=0.1)


BAD_CALLS = {
    "sharded_axes out of range": lambda r, w, dev: nd.na2d(*_qkv((1, 4, 6), dev), 3, sharded_axes=2),
    "sharded_axes not an int": lambda r, w, dev: nd.na1d(*_qkv((1, 4), dev), 3, sharded_axes="0"),
    "grid missing": lambda r, w, dev: nd.na2d(*_qkv((1, 4, 4), dev), 3, sharded_axes=(0, 1)),
    "grid product": lambda r, w, dev: nd.na2d(*_qkv((1, 4, 4), dev), 3, sharded_axes=(0, 1), grid=(2, 2)),
    "method": lambda r, w, dev: nd.na1d(*_qkv((1, 4), dev), 3, method="ring"),
    "heads not divisible": lambda r, w, dev: nd.na1d(*_qkv((1, 4), dev, heads=3), 3, method="heads"),
    "empty shard": lambda r, w, dev: nd.na1d(*_qkv((1, 6 * r), dev), 3),
    "unsharded axis differs": lambda r, w, dev: nd.na2d(*_qkv((1, 4, 5 + r), dev), 3),
    "kernel differs": lambda r, w, dev: nd.na1d(*_qkv((1, 6), dev), 3 + 2 * r),
    "one rank's dtype": lambda r, w, dev: nd.na1d(
        *_qkv((1, 6), dev)[:2], _qkv((1, 6), dev, dtype=torch.float32 if r else torch.float64)[2], 3
    ),
    "dtype differs": lambda r, w, dev: nd.na1d(*_qkv((1, 6), dev, dtype=torch.float32 if r else torch.float64), 3),
    "grid too small for the window": lambda r, w, dev: nd.na1d(*_qkv((1, 2), dev), 5),
    "group type": lambda r, w, dev: nd.na1d(*_qkv((1, 6), dev), 3, group="world"),
    "rpb on one rank": lambda r, w, dev: nd.na1d(
        *_qkv((1, 6), dev), 3, rpb=torch.zeros(2, 5, dtype=torch.float64, device=dev) if r else None
    ),
    "query and key shards differ": lambda r, w, dev: nd.na1d(_qkv((1, 6), dev)[0], *_qkv((1, 5), dev)[:2], 3),
    "module attn_drop": _module_with_dropout,
    "dtensor with sharded_axes": lambda r, w, dev: nd.na1d(*_dtensors(dev, "shard"), 3, sharded_axes=0),
    "dtensor replicated": lambda r, w, dev: nd.na1d(*_dtensors(dev, "replicate"), 3),
    "dtensor key plain": lambda r, w, dev: nd.na1d(*_dtensors(dev, "shard", 1), *_qkv((1, 6), dev)[:2], 3),
}


# --------------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------------

_FIXED = {
    2: [
        DCase((13,), (7,), ((2, 11),), rpb=True),
        DCase((13,), (7,), ((2, 11),), rpb=True, method="heads"),
        DCase((16,), (4,), ((9, 7),), dilation=(2,), is_causal=(True,)),
        DCase((10, 9), (3, 5), ((4, 6),), dilation=(2, 1), stride=(2, 1), additional=3, heads=4, scale=0.3),
        DCase((8, 12), (4, 3), ((5, 7),), sharded_axes=(1,), is_causal=(True, False), head_dim_v=6),
        DCase((6, 5, 7), (3, 2, 3), ((1, 5),), dilation=(1, 2, 1), stride=(1, 1, 3), is_causal=(True, False, True)),
        DCase((6, 5, 7), (3, 2, 3), ((1, 5),), is_causal=(True, False, True), heads=4, kv_heads=2, method="heads"),
        DCase((9, 8), (3, 3), ((5, 4),), heads=4, additional=2, lse=False, method="heads"),
        DCase((9, 8), (3, 3), ((5, 4),), dilation=(2, 1), lse=False),
    ],
    3: [
        DCase((17,), (7,), ((1, 2, 14),), stride=(3,), rpb=True),
        DCase((20,), (5,), ((7, 6, 7),), dilation=(3,), stride=(2,), is_causal=(True,)),
        DCase((12, 7), (7, 3), ((2, 1, 9),), rpb=True, heads=3, kv_heads=3),
        DCase((12, 7), (7, 3), ((2, 1, 9),), rpb=True, heads=3, kv_heads=3, method="heads", additional=2),
        DCase((9, 4, 5), (3, 3, 3), ((3, 3, 3),), is_causal=(True, False, False), heads=6, kv_heads=3, method="heads"),
        DCase((9, 4, 5), (3, 3, 3), ((1, 7, 1),), stride=(3, 1, 1), heads=6, kv_heads=3, method="auto"),
    ],
    4: [
        DCase((9, 10), (5, 3), ((4, 5), (3, 7)), sharded_axes=(0, 1), rpb=True, additional=2),
        DCase(
            (10, 11),
            (4, 5),
            ((1, 9), (6, 5)),
            sharded_axes=(0, 1),
            dilation=(2, 2),
            stride=(2, 1),
            is_causal=(False, True),
        ),
        DCase(
            (8, 6, 7),
            (3, 3, 2),
            ((5, 3), (2, 5)),
            sharded_axes=(0, 2),
            dilation=(2, 1, 1),
            stride=(1, 3, 2),
            is_causal=(False, False, True),
        ),
        DCase((24,), (7,), ((1, 2, 1, 20),), dilation=(2,), additional=1, heads=4, kv_heads=4, method="auto"),
        DCase((5, 6, 7), (3, 3, 3), ((5,), (2, 4), (4, 3)), sharded_axes=(0, 1, 2), rpb=True, heads=4, kv_heads=1),
        DCase((9, 10), (5, 3), ((4, 5), (3, 7)), sharded_axes=(0, 1), rpb=True, heads=4, kv_heads=4, method="heads"),
        DCase((8, 9), (7, 3), ((2, 2, 2, 2),), heads=4, kv_heads=4, rpb=True, method="auto"),  # auto: heads
    ],
}


SUBGROUP_MEMBERS = (1, 2)
SUBGROUP_CASES = [
    DCase((11,), (5,), ((4, 7),), rpb=True),
    DCase((11, 6), (5, 3), ((4, 7),), is_causal=(True, False), method="heads"),
]


def _split(n: int, parts: int, rng: random.Random) -> tuple[int, ...]:
    """``parts`` positive sizes summing to ``n``, often uneven and sometimes a single token."""
    cuts = sorted(rng.sample(range(1, n), parts - 1))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, n]))


def random_cases(world: int, count: int, seed: int) -> list[DCase]:
    rng = random.Random(seed * 100 + world)
    out = []
    while len(out) < count:
        rank = rng.choice([1, 2, 3])
        kernel, dil, stride, causal, spatial = [], [], [], [], []
        for _ in range(rank):
            k = rng.choice([2, 3, 4, 5, 7] if rank < 3 else [2, 3])
            d = rng.choice([1, 1, 2, 3])
            kernel.append(k)
            dil.append(d)
            stride.append(rng.choice([1, 1, 2, k]))
            causal.append(rng.random() < 0.3)
            spatial.append(max(k * d, world) + rng.randint(0, 6 if rank < 3 else 2))
        axes, grid = _random_grid(world, rank, rng)
        for a, g in zip(axes, grid):  # every rank holds at least one token
            spatial[a] = max(spatial[a], g)
        shards = tuple(_split(spatial[a], g, rng) for a, g in zip(axes, grid))
        heads = rng.choice([world, 2 * world]) if rng.random() < 0.5 else 2
        kv_heads = rng.choice([h for h in (1, heads // 2, heads) if h and heads % h == 0])
        methods = ["halo", "auto"] + (["heads"] if heads % world == 0 and kv_heads % world == 0 else [])
        case = DCase(
            tuple(spatial), tuple(kernel), shards, axes, tuple(dil), tuple(stride), tuple(causal),
            method=rng.choice(methods), heads=heads, kv_heads=kv_heads, seed=len(out) + 1,
            rpb=not any(causal) and all(k % 2 for k in kernel) and rng.random() < 0.5,
            additional=rng.choice([0, 0, 2]), scale=rng.choice([None, None, 0.7]), batch=rng.choice([1, 2]),
            head_dim_v=rng.choice([4, 4, 6]), lse=rng.random() < 0.8,
        )  # fmt: skip
        out.append(case)
    return out


def _random_grid(world: int, rank: int, rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sharded axes and a grid over them whose product is ``world`` (one axis, or a factorization)."""
    factorizations = [
        g for n in range(2, rank + 1) for g in itertools.product(range(2, world + 1), repeat=n) if math.prod(g) == world
    ]
    if not factorizations or rng.random() < 0.5:
        return (rng.randrange(rank),), (world,)
    grid = rng.choice(factorizations)
    return tuple(sorted(rng.sample(range(rank), len(grid)))), grid


def cases_for(world: int) -> list[DCase]:
    fixed = _FIXED[world]
    return fixed + random_cases(world, 6, 0)
