"""The distributed suite (docs/distributed.md): bytes moved per rank and time of natten.distributed's
halo exchange, against an all-gather of k/v (a naive baseline written here only) and against head
parallelism, on the S3- and S6-shaped problems of the GPU suite split 2, 4 and 8 ways.

``python benchmarks/run.py --suite distributed`` writes three kinds of rows:

* ``bytes``: every rank's sent/received bytes per forward at the real size (bf16), from the plan
  alone (no run), for each method; the backward moves the same bytes the other way.
* ``time`` (unless ``--simulate``): spawned worlds of 2/4/8 processes on this machine report the
  forward and forward+backward time (the slowest rank's, median over iterations) beside the bytes
  measured by ``natten.distributed.collect()`` and those the plan predicts for that size. With a GPU
  per rank (NCCL) they run the real sizes in bf16; on CPUs (gloo) the problems scaled by
  ``--dist-scale`` (spatial sizes, kernel and stride; ``--dist-heads`` heads of ``--dist-head-dim``,
  float32), since the real sizes are far too slow there.
* ``simulate`` (``--simulate``; ``--device cuda`` for the real sizes on one GPU, bf16): one process
  runs every rank's shard in turn - the halo copies (each rank's extended k/v assembled from the
  owners' tensors, the device copy that stands in for the transfer) and its kernel on the extended
  grid - and compares the sum with the unsharded kernel plus the same copies (target: within 10%).
  Each rank's kernel computes only its own queries (the box of its extended grid where they sit);
  the ranks' outputs put together are compared with the unsharded output (``max_abs_diff``, ``exact``:
  within 2 units in the last place; a row that is not fails the run). ``simulate-heads`` rows do the
  same for head parallelism: each rank's heads made contiguous (the all-to-all's copies) and its
  kernel on the whole grid.
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.distributed as dist

import natten
import natten.distributed as nd
from common import Recorder
from natten.distributed.halo import assign, extended, selector
from natten.distributed.launch import backend_for, spawn
from natten.distributed.plan import grid_coords, make_layout, rank_plan
from natten.functional.fused import _na as fused_na
from natten.functional.validation import FusedShapes
from natten.profiler import synchronize
from suite_gpu import PROBLEMS

PROBLEM_IDS = ("S3", "S3-s16", "S6", "S6-s")
WORLDS = (2, 4, 8)
SIM_TARGET = 1.10  # sharded (all ranks in turn) / (unsharded + halo copies)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _splits(pid: str, world: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(sharded_axes, grid): S3 by rows; S6 by frames, and by a 2 x world/2 grid of height x width."""
    if pid.startswith("S3"):
        return [((0,), (world,))]
    return [((0,), (world,)), ((1, 2), (2, world // 2))]


def _even(n: int, parts: int) -> tuple[int, ...]:
    return tuple(n // parts + (1 if i < n % parts else 0) for i in range(parts))


def _layout(spatial, axes, grid):
    sizes = {a: _even(spatial[a], g) for a, g in zip(axes, grid)}
    local = []
    for r in range(math.prod(grid)):
        coords = grid_coords(r, grid)
        local.append(tuple(sizes[a][coords[axes.index(a)]] if a in sizes else n for a, n in enumerate(spatial)))
    layout, why = make_layout(local, axes, grid)
    assert layout is not None, why
    return layout


def _spec(problem, scale: float = 1.0, heads: int | None = None, head_dim: int | None = None) -> dict:
    """A problem of the GPU suite; scaled (CPU runs): spatial sizes, kernel and stride times ``scale``,
    ``heads`` of ``head_dim``, float32."""
    pid, spatial, b, h, d, dts, kernel, dil, stride, causal = problem
    if scale != 1.0:
        dts = "fp32"
        kernel = tuple(max(2, round(k * scale)) for k in kernel)
        spatial = tuple(max(round(n * scale), k * dd) for n, k, dd in zip(spatial, kernel, dil))
        stride = tuple(min(max(1, round(s * scale)), k) for s, k in zip(stride, kernel))
        h, d = heads or h, head_dim or d
    return dict(
        id=pid,
        spatial=tuple(spatial),
        batch=b,
        heads=h,
        head_dim=d,
        dtype=dts,
        kernel_size=tuple(kernel),
        dilation=tuple(dil),
        stride=tuple(stride),
        is_causal=tuple(causal),
    )


def _params(spec) -> tuple:
    return (spec["kernel_size"], spec["dilation"], spec["stride"], spec["is_causal"])


def _kwargs(spec) -> dict:
    return dict(zip(("kernel_size", "dilation", "stride", "is_causal"), _params(spec)))


def _op(spec):
    return getattr(natten.functional, f"na{len(spec['spatial'])}d")


def _shapes(spec) -> FusedShapes:
    h, d = spec["heads"], spec["head_dim"]
    return FusedShapes(h, h, d, d, 0, d**-0.5)


def _allgather_bytes(layout, spec, itemsize) -> list[tuple[int, int]]:
    """The baseline gathers every shard's k and v, each padded to the largest shard."""
    site = spec["batch"] * spec["heads"] * 2 * spec["head_dim"] * itemsize
    largest = max(math.prod(layout.local_shape(r)) for r in range(layout.world))
    moved = (layout.world - 1) * largest * site
    return [(moved, moved)] * layout.world


def _predicted(spec, layout, itemsize: int) -> dict:
    """Predicted (sent, received) bytes per rank of each method's forward."""
    params, shapes, b = _params(spec), _shapes(spec), spec["batch"]
    out = {
        "halo": nd.predicted("halo", layout, params, b, shapes, itemsize),
        "allgather": _allgather_bytes(layout, spec, itemsize),
    }
    if spec["heads"] % layout.world == 0:
        out["heads"] = nd.predicted("heads", layout, params, b, shapes, itemsize)
    return out


def _bytes_rows(rec: Recorder, spec, layout, split: str, itemsize: int) -> dict:
    """One row per method: predicted bytes per rank at this size."""
    params, shapes, b = _params(spec), _shapes(spec), spec["batch"]
    out = _predicted(spec, layout, itemsize)
    plans = [rank_plan(layout, params, r) for r in range(layout.world)]
    ext = sum(math.prod(p.extended) for p in plans) / math.prod(layout.spatial)
    tokens = max(math.prod(layout.local_shape(r)) for r in range(layout.world))
    own_kv = b * tokens * shapes.kv_heads * 2 * shapes.head_dim * itemsize
    for method, per_rank in out.items():
        received = [r for _, r in per_rank]
        rec.add(
            "bytes",
            problem=spec["id"],
            world=layout.world,
            split=split,
            method=method,
            received_max=max(received),
            received_mean=sum(received) / len(received),
            sent_max=max(s for s, _ in per_rank),
            received_per_rank=received,
            received_over_own_kv=max(received) / own_kv,
            extended_over_tokens=ext if method == "halo" else None,
        )
    return out


def _print_bytes(spec, split, world, table: dict) -> None:
    mib = {m: max(r for _, r in v) / 2**20 for m, v in table.items()}
    shown = "  ".join(f"{m} {v:9.2f}" for m, v in mib.items())
    print(f"{spec['id']:7s} {split:14s} P={world}  received MiB/rank (max): {shown}")


# --------------------------------------------------------------------------------------------------
# gloo worlds
# --------------------------------------------------------------------------------------------------


def _timed_world(fn, device, warmup: int, iters: int, max_seconds: float) -> float:
    """Median over iterations of the slowest rank's time, in ms (every rank runs this together)."""
    times, spent = [], 0.0
    for i in range(warmup + iters):
        dist.barrier()
        synchronize(str(device))
        t0 = time.perf_counter()
        fn()
        synchronize(str(device))
        elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if i >= warmup:
            times.append(elapsed.item() * 1e3)
            spent += elapsed.item()
            if spent >= max_seconds:
                break
    return statistics.median(times)


def _allgather_forward(q, k, v, spec, layout, rank):
    """Naive baseline: all-gather every shard's k/v (padded to the largest), cut this rank's extended
    range out of the whole grid, run the same local op as the halo method."""
    kv = torch.cat([k, v], dim=-1)
    b, site = kv.shape[0], kv.shape[-2] * kv.shape[-1]
    largest = max(math.prod(layout.local_shape(r)) for r in range(layout.world)) * site
    flat = kv.new_zeros(b, largest)
    flat[:, : kv[0].numel()] = kv.reshape(b, -1)
    parts = [torch.empty_like(flat) for _ in range(layout.world)]
    dist.all_gather(parts, flat)
    full = kv.new_empty(b, *layout.spatial, *kv.shape[-2:])
    for r, part in enumerate(parts):
        shape = layout.local_shape(r)
        box = (slice(None), *(slice(a, c) for a, c in layout.bounds[r]))
        full[box] = part[:, : math.prod(shape) * site].reshape(b, *shape, *kv.shape[-2:])
    plan = rank_plan(layout, _params(spec), rank)
    ext = full[(slice(None), *(slice(a.lo, a.hi) for a in plan.axes))]
    d = k.shape[-1]
    k_ext, v_ext = ext[..., :d].contiguous(), ext[..., d:].contiguous()
    return _box_op(spec, q, (k_ext, v_ext), plan)


def _box_op(spec, q, kv_ext, plan):
    """The local op as natten.distributed runs it: the rank's queries as the box of its extended grid."""
    ks, dl, st, causal = _params(spec)
    return fused_na(len(spec["spatial"]), q, *kv_ext, ks, dl, causal, None, None, None, None, st, False, plan.offset)


def _world_job(rank: int, world: int, device, jobs: list, timing: dict) -> list[dict]:
    """Runs in every rank of a spawned world: each (spec, axes, grid) for each method."""
    results = []
    for n, (spec, axes, grid) in enumerate(jobs):
        if rank == 0:
            print(f"  [{n + 1}/{len(jobs)}] {spec['id']} {_split_name(axes, grid)} ...", flush=True)
        layout = _layout(spec["spatial"], axes, grid)
        b, h, d = spec["batch"], spec["heads"], spec["head_dim"]
        shape, dtype = (b, *layout.local_shape(rank), h, d), _DTYPES[spec["dtype"]]
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        kw = _kwargs(spec)
        op = getattr(nd, f"na{len(spec['spatial'])}d")
        row = {"problem": spec["id"], "split": _split_name(axes, grid), "world": world, "ms": {}, "measured": {}}
        methods = ["halo", "allgather"] + (["heads"] if h % world == 0 else [])
        for method in methods:
            if method == "allgather":
                with torch.no_grad():
                    row["ms"]["allgather forward"] = _timed_world(
                        lambda: _allgather_forward(q, k, v, spec, layout, rank), device, **timing
                    )
                continue
            call = dict(kw, sharded_axes=axes, grid=grid, method=method)
            with torch.no_grad():
                row["ms"][f"{method} forward"] = _timed_world(lambda: op(q, k, v, **call), device, **timing)
            up = torch.randn_like(q)

            def fwd_bwd():
                torch.autograd.grad((op(q, k, v, **call) * up).sum(), (q, k, v))

            row["ms"][f"{method} forward+backward"] = _timed_world(fwd_bwd, device, **timing)
            with nd.collect() as log, torch.no_grad():
                op(q, k, v, **call)
            row["measured"][method] = sum(e.received_bytes for e in log if e.direction == "forward")
        results.append(row)
    return results


def _split_name(axes, grid) -> str:
    return "axes " + ",".join(map(str, axes)) + " grid " + "x".join(map(str, grid))


def _run_worlds(rec: Recorder, args) -> bool:
    """CPU (gloo): the problems scaled down, float32; a GPU per rank (NCCL): the real sizes, bf16."""
    met = True
    timing = dict(warmup=args.warmup, iters=args.iters, max_seconds=args.max_time)
    for world in _worlds(args):
        backend, kind = backend_for(world)
        real = kind == "cuda"
        scaled = None if real else dict(scale=args.dist_scale, heads=args.dist_heads, head_dim=args.dist_head_dim)
        jobs = []
        for pid in _problem_ids(args):
            spec = (
                _spec(_problem(pid))
                if real
                else _spec(_problem(pid), args.dist_scale, args.dist_heads, args.dist_head_dim)
            )
            for axes, grid in _splits(pid, world):
                jobs.append((spec, axes, grid))
        where = "one GPU each" if real else f"this machine's {os.cpu_count()} cores"
        print(f"\n{backend} world of {world} processes on {where}: {len(jobs)} problems")
        t0 = time.perf_counter()
        ranks = spawn(world, _world_job, jobs, timing, timeout=3600)
        print(f"  done in {time.perf_counter() - t0:.0f} s")
        for j, ((spec, axes, grid), row) in enumerate(zip(jobs, ranks[0])):
            layout = _layout(spec["spatial"], axes, grid)
            table = _predicted(spec, layout, _DTYPES[spec["dtype"]].itemsize)
            predicted = {m: max(r for _, r in table[m]) for m in row["measured"]}
            measured = {m: max(rows[j]["measured"][m] for rows in ranks) for m in row["measured"]}
            ok = all(abs(measured[m] - predicted[m]) <= 0.05 * max(predicted[m], 1) for m in measured)
            met &= ok
            rec.add(
                "time",
                problem=spec["id"],
                world=world,
                split=row["split"],
                ms=row["ms"],
                scaled=scaled,
                spatial=list(spec["spatial"]),
                kernel_size=list(spec["kernel_size"]),
                stride=list(spec["stride"]),
                received_max_measured=measured,
                received_max_predicted=predicted,
                bytes_match=ok,
            )
            times = "  ".join(f"{k} {v:8.1f}" for k, v in row["ms"].items())
            print(f"{spec['id']:7s} {row['split']:16s} P={world} {tuple(spec['spatial'])} ms: {times}")
    return met


# --------------------------------------------------------------------------------------------------
# one device, every rank in turn
# --------------------------------------------------------------------------------------------------


def _timed(fn, device, warmup: int, iters: int, max_seconds: float) -> float:
    times, spent = [], 0.0
    for i in range(warmup + iters):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            spent += times[-1]
            if spent >= max_seconds:
                break
    return statistics.median(times) * 1e3


def _simulate(rec: Recorder, args) -> bool:
    device, met = args.device, True
    real = device != "cpu"
    timing = dict(warmup=args.warmup, iters=args.iters, max_seconds=args.max_time)
    print(f"\nsimulation on {device}: every rank's shard in turn" + ("" if real else f", scaled {args.dist_scale}"))
    for pid in _problem_ids(args):
        scaled = () if real else (args.dist_scale, args.dist_heads, args.dist_head_dim)
        spec = _spec(_problem(pid), *scaled)
        dtype = _DTYPES[spec["dtype"]]
        g = torch.Generator(device).manual_seed(0)
        b, h, d = spec["batch"], spec["heads"], spec["head_dim"]
        shape = (b, *spec["spatial"], h, d)
        q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(3))
        op, kw = _op(spec), _kwargs(spec)
        with torch.no_grad():
            unsharded = _timed(lambda: op(q, k, v, **kw), device, **timing)
            reference = op(q, k, v, **kw)
            for world in _worlds(args):
                if h % world == 0:
                    row = _simulate_heads(spec, (q, k, v), world, timing, device)
                    row["ratio"] = (row["ms_kernels"] + row["ms_copies"]) / (unsharded + row["ms_copies"])
                    rec.add(
                        "simulate-heads",
                        problem=pid,
                        device=device,
                        dtype=str(dtype),
                        scaled=scaled or None,
                        ms_unsharded=unsharded,
                        **row,
                    )
                    print(
                        f"{pid:7s} {'heads':16s} P={world}: ranks in turn: kernels {row['ms_kernels']:8.2f} + head "
                        f"copies {row['ms_copies']:6.2f} ms = {row['ratio']:.2f}x unsharded + copies"
                    )
                for axes, grid in _splits(pid, world):
                    row = _simulate_split(spec, q, (k, v), axes, grid, timing, device, reference)
                    row["ratio"] = (row["ms_kernels"] + row["ms_assemble"]) / (unsharded + row["ms_halo_copies"])
                    row.update(ms_unsharded=unsharded, target=SIM_TARGET, met=row["ratio"] <= SIM_TARGET)
                    met &= row["met"] and row["exact"]
                    rec.add("simulate", problem=pid, device=device, dtype=str(dtype), scaled=scaled or None, **row)
                    print(
                        f"{pid:7s} {row['split']:16s} P={world}: unsharded {unsharded:8.2f} ms; ranks in turn: "
                        f"kernels {row['ms_kernels']:8.2f} + extended grids {row['ms_assemble']:6.2f} (halo copies "
                        f"{row['ms_halo_copies']:6.2f}) ms = {row['ratio']:.2f}x unsharded + halo copies (target <= "
                        f"{SIM_TARGET}); extended grids hold {row['extended_over_tokens']:.2f}x the tokens; "
                        f"max |sharded - unsharded| {row['max_abs_diff']:.2e} ({'ok' if row['exact'] else 'WRONG'})"
                    )
    return met


def _simulate_split(spec, q, kv, axes, grid, timing, device, reference) -> dict:
    """Times every rank's part in turn: assembling its extended k and v (zeros, own shard, halo
    blocks), the halo block copies alone, and its kernel (its queries, the box of the extended grid
    where they sit, as natten.distributed runs it). The ranks' outputs put together are compared with
    ``reference``, the unsharded output: ``max_abs_diff`` (rounding: the tiles differ)."""
    layout = _layout(spec["spatial"], axes, grid)
    plans = [rank_plan(layout, _params(spec), r) for r in range(layout.world)]
    exts = [[_assemble(x, layout, p) for x in kv] for p in plans]
    qs = [q[_box(layout, p.rank)] for p in plans]

    def kernels():
        return [_box_op(spec, qq, e, p) for qq, e, p in zip(qs, exts, plans)]

    def halo_copies():
        for p, ext in zip(plans, exts):
            for x, e in zip(kv, ext):
                _copy_halo(x, p, e)

    sharded = torch.empty_like(reference)
    for p, out in zip(plans, kernels()):
        sharded[_box(layout, p.rank)] = out
    diff = (sharded.float() - reference.float()).abs().max().item()
    return dict(
        world=layout.world,
        split=_split_name(axes, grid),
        spatial=list(spec["spatial"]),
        ms_assemble=_timed(lambda: [_assemble(x, layout, p) for p in plans for x in kv], device, **timing),
        ms_halo_copies=_timed(halo_copies, device, **timing),
        ms_kernels=_timed(kernels, device, **timing),
        extended_over_tokens=sum(math.prod(p.extended) for p in plans) / math.prod(layout.spatial),
        max_abs_diff=diff,
        exact=diff <= _tolerance(reference),
    )


def _tolerance(reference) -> float:
    """What summing in another order may change: 2 units in the last place of the output's dtype at
    its largest magnitude (float32 accumulation, then rounding to that dtype)."""
    eps = torch.finfo(reference.dtype).eps
    return 2 * eps * max(1.0, reference.abs().max().item())


def _simulate_heads(spec, qkv, world: int, timing, device) -> dict:
    """Head parallelism, every rank in turn: the copies an all-to-all makes (each rank's heads of q, k
    and v made contiguous, the outputs put back together) and each rank's kernel on the whole grid."""
    op, kw, h = _op(spec), _kwargs(spec), spec["heads"] // world

    def split():
        return [[x[..., r * h : (r + 1) * h, :].contiguous() for x in qkv] for r in range(world)]

    parts = split()
    outs = [op(*p, **kw) for p in parts]
    copies = _timed(lambda: (split(), torch.cat(outs, dim=-2)), device, **timing)
    kernels = _timed(lambda: [op(*p, **kw) for p in parts], device, **timing)
    return dict(world=world, ms_kernels=kernels, ms_copies=copies)


def _assemble(x, layout, plan):
    """What rank ``plan.rank`` holds of ``x`` (k or v) after the exchange: its shard and the needed
    halo sites, from the owners' tensors (here slices of the whole grid), in its extended grid."""
    ext = extended(x[_box(layout, plan.rank)], plan)
    _copy_halo(x, plan, ext)
    return ext


def _copy_halo(x, plan, ext) -> None:
    """The blocks ``plan.rank`` receives, copied from the whole grid (the owners' data)."""
    lo = [a.lo for a in plan.axes]
    for t in plan.recv:
        src = selector(tuple(tuple(j + o for j in ix) for ix, o in zip(t.index, lo)), x.device)
        assign(ext, selector(t.index, x.device), x[src])


def _box(layout, rank: int) -> tuple:
    return (slice(None), *(slice(a, b) for a, b in layout.bounds[rank]))


# --------------------------------------------------------------------------------------------------


def _problem(pid: str):
    return next(p for p in PROBLEMS if p[0] == pid)


def _problem_ids(args) -> list[str]:
    only = [p for p in args.dist_problems.split(",") if p]
    return [p for p in PROBLEM_IDS if not only or p in only]


def _worlds(args) -> list[int]:
    return [int(w) for w in args.dist_worlds.split(",") if w]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("distributed suite")
    g.add_argument("--dist-problems", default="", help=f"comma-separated ids of {PROBLEM_IDS} (default: all)")
    g.add_argument("--dist-worlds", default=",".join(map(str, WORLDS)), help="ranks per split (default 2,4,8)")
    g.add_argument("--dist-scale", type=float, default=0.25, help="CPU runs: spatial/kernel/stride scale")
    g.add_argument("--dist-heads", type=int, default=8, help="CPU runs: heads (divisible by the world sizes)")
    g.add_argument("--dist-head-dim", type=int, default=32, help="CPU runs: head_dim")
    g.add_argument("--simulate", action="store_true", help="one process runs every rank's shard in turn")
    g.add_argument("--device", default="cpu", help="--simulate: cpu (scaled problems) or cuda (real sizes, bf16)")


def run(args: argparse.Namespace) -> tuple[Recorder, bool]:
    rec = Recorder("distributed", args.device)
    print(f"natten distributed suite: torch {rec.provenance['torch']}, git {rec.provenance['git_sha']}")
    print("\nbytes per forward at the real sizes (bf16), from the plan:")
    for pid in _problem_ids(args):
        spec = _spec(_problem(pid))
        for world in _worlds(args):
            for axes, grid in _splits(pid, world):
                layout = _layout(spec["spatial"], axes, grid)
                split = _split_name(axes, grid)
                _print_bytes(spec, split, world, _bytes_rows(rec, spec, layout, split, _DTYPES[spec["dtype"]].itemsize))
    met = _simulate(rec, args) if args.simulate else _run_worlds(rec, args)
    return rec, met
