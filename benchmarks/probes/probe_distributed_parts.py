"""Where the one-GPU simulation's time above the unsharded kernel goes (suite_distributed --simulate):
per split, every rank's kernel pieces run serially (as natten runs them today) and on two streams
(a piece's tail filled by the next), pieces cut again at a tile remainder, and the extended grid's
assembly by part (zeroed slabs, the shard copied in, the halo blocks), against a contiguous copy of
the same bytes. Medians of ``--iters`` runs; ratios against the unsharded kernel of the same run.

    python benchmarks/probes/probe_distributed_parts.py [--problem S6-s] [--iters 10] [--backward]
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from natten_kernels.triton.layout import query_pieces
from natten_kernels.triton.tiling import choose_config, tile_shapes

import suite_distributed as sd
from natten.distributed.halo import _owned, _runs
from natten.distributed.plan import rank_plan


def timed(fn, iters):
    return sd._timed(fn, "cuda", warmup=2, iters=iters, max_seconds=60.0)


def tile_cut(extent, offset, grid, spec) -> list[tuple[tuple, list[int]]]:
    """Each stride-block piece cut again where its tiles leave a remainder along the first axis."""
    ks, dl, st, cz = sd._params(spec)
    out = []
    for box, off in query_pieces(extent, offset, grid, dl, st):
        ext = [s.stop - s.start for s in box[1:]]
        cfg = choose_config(128, 2, tuple(grid), ks, dl, st, cz, queries=(tuple(off), tuple(ext)))
        tq, _ = tile_shapes(ks, dl, st, grid, cfg[0], cfg[1], cz, True, (tuple(off), tuple(ext)))
        n, t = ext[0], tq[0]
        if t == 1:
            t = 2  # a 1-frame tile: try whole 2-frame tiles and a remainder of one
        whole = n // t * t
        if 0 < whole < n:
            a = box[1].start
            out.append(((slice(None), slice(a, a + whole), *box[2:]), off))
            out.append(((slice(None), slice(a + whole, a + n), *box[2:]), [off[0] + whole, *off[1:]]))
        else:
            out.append((box, off))
    return out


def halo(plans, exts, kv) -> None:
    for pl, pair in zip(plans, exts):
        for x, e in zip(kv, pair):
            sd._copy_halo(x, pl, e)


def backward(spec, q, k, v, iters: int) -> None:
    """Forward + backward, every rank in turn (each rank's q box and extended k/v, as natten.distributed
    runs them), against the unsharded op; the dq pass in the forward's pieces, and in one launch per
    box (as before it had pieces)."""
    import natten_kernels.triton.launch_backward as lb

    ks, dl, st, cz = sd._params(spec)
    op, kw = sd._op(spec), sd._kwargs(spec)
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
    grad = torch.randn_like(q)
    base = timed(lambda: torch.autograd.grad(op(*leaves, **kw), leaves, grad), iters)
    print(f"{spec['id']}: unsharded forward + backward {base:.2f} ms")
    pieces = lb.box_pieces
    for world in (2, 4, 8):
        for axes, grid in sd._splits(spec["id"], world):
            layout = sd._layout(spec["spatial"], axes, grid)
            plans = [rank_plan(layout, sd._params(spec), r) for r in range(layout.world)]
            ranks = []
            for pl in plans:
                box = sd._box(layout, pl.rank)
                ext = [sd._assemble(x, layout, pl).requires_grad_(True) for x in (k, v)]
                ranks.append((q[box].detach().requires_grad_(True), ext, pl, grad[box].contiguous()))

            def run():
                for qq, ext, pl, g in ranks:
                    out = sd.fused_na(3, qq, *ext, ks, dl, cz, None, None, None, None, st, False, pl.offset)
                    torch.autograd.grad(out, [qq, *ext], g)  # no .grad to accumulate into

            lb.box_pieces = lambda extent, offset, *a: [((slice(None),), list(offset))]
            whole = timed(run, iters)
            lb.box_pieces = pieces
            cut = timed(run, iters)
            name = f"{sd._split_name(axes, grid)} P={world}"
            print(
                f"  {name:18s} dq in pieces {cut:8.2f} ms = {cut / base:.3f}x; "
                f"one dq launch per box {whole:8.2f} ms = {whole / base:.3f}x"
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problem", default="S6-s")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--backward", action="store_true", help="time forward + backward instead")
    args = p.parse_args()
    if args.backward:
        spec = sd._spec(sd._problem(args.problem))
        g = torch.Generator("cuda").manual_seed(0)
        shape = (spec["batch"], *spec["spatial"], spec["heads"], spec["head_dim"])
        qkv = [torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
        return backward(spec, *qkv, args.iters)
    spec = sd._spec(sd._problem(args.problem))
    ks, dl, st, cz = sd._params(spec)
    g = torch.Generator("cuda").manual_seed(0)
    shape = (spec["batch"], *spec["spatial"], spec["heads"], spec["head_dim"])
    q, k, v = (torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    op, kw = sd._op(spec), sd._kwargs(spec)
    side = torch.cuda.Stream()
    with torch.no_grad():
        base = timed(lambda: op(q, k, v, **kw), args.iters)
        print(f"{args.problem}: unsharded {base:.2f} ms")
        for world in (2, 4, 8):
            for axes, grid in sd._splits(args.problem, world):
                layout = sd._layout(spec["spatial"], axes, grid)
                plans = [rank_plan(layout, sd._params(spec), r) for r in range(layout.world)]
                exts = [[sd._assemble(x, layout, pl) for x in (k, v)] for pl in plans]
                qs = [q[sd._box(layout, pl.rank)] for pl in plans]
                name = f"{sd._split_name(axes, grid)} P={world}"

                def pieces(cut):
                    jobs = []
                    for qq, (ke, ve), pl in zip(qs, exts, plans):
                        per = cut(list(qq.shape[1:-2]), list(pl.offset), list(ke.shape[1:-2]))
                        jobs.append([(qq[b], ke, ve, o) for b, o in per])
                    return jobs

                def run(jobs, streams):
                    for rank_jobs in jobs:
                        cur = torch.cuda.current_stream()
                        if streams:
                            side.wait_stream(cur)
                        for i, (qq, ke, ve, o) in enumerate(rank_jobs):
                            with torch.cuda.stream(side if streams and i % 2 else cur):
                                sd.fused_na(3, qq, ke, ve, ks, dl, cz, None, None, None, None, st, False, o)
                        if streams:
                            cur.wait_stream(side)

                blocks = pieces(lambda e, o, gr: query_pieces(e, o, gr, dl, st))
                remainder = pieces(lambda e, o, gr: tile_cut(e, o, gr, spec))
                serial = timed(lambda: [sd._box_op(spec, qq, e, pl) for qq, e, pl in zip(qs, exts, plans)], args.iters)
                rows = {
                    "as natten (serial)": serial,
                    "block pieces, serial": timed(lambda: run(blocks, False), args.iters),
                    "block pieces, 2 streams": timed(lambda: run(blocks, True), args.iters),
                    "remainder pieces, serial": timed(lambda: run(remainder, False), args.iters),
                    "remainder pieces, 2 streams": timed(lambda: run(remainder, True), args.iters),
                }
                n_pieces = (sum(len(j) for j in blocks), sum(len(j) for j in remainder))
                for label, ms in rows.items():
                    print(f"  {name:12s} kernels {label:28s} {ms:8.2f} ms = {ms / base:.3f}x unsharded")
                print(f"  {name:12s} launches: block pieces {n_pieces[0]}, remainder pieces {n_pieces[1]}")

                def zero():
                    for pl, pair in zip(plans, exts):
                        for e in pair:
                            for axis, pos in enumerate(pl.unwritten or ()):
                                for a, b in _runs(pos):
                                    e[(slice(None),) * (1 + axis) + (slice(a, b),)] = 0

                def shard():
                    for pl, pair in zip(plans, exts):
                        for x, e in zip((k, v), pair):
                            e[_owned(pl, x[sd._box(layout, pl.rank)].shape[1:-2])] = x[sd._box(layout, pl.rank)]

                flat = [torch.empty(2 * k.numel(), dtype=k.dtype, device="cuda") for _ in range(2)]
                parts = {
                    "zero slabs": timed(zero, args.iters),
                    "shard copies": timed(shard, args.iters),
                    "contiguous copy, k+v bytes": timed(lambda: flat[1].copy_(flat[0]), args.iters),
                    "halo copies": timed(lambda: halo(plans, exts, (k, v)), args.iters),
                    "assembly (as the suite)": timed(
                        lambda: [sd._assemble(x, layout, pl) for pl in plans for x in (k, v)], args.iters
                    ),
                }
                ext_sites = sum(math.prod(pl.extended) for pl in plans) / math.prod(spec["spatial"])
                for label, ms in parts.items():
                    print(f"  {name:12s} assembly {label:27s} {ms:8.3f} ms = {ms / base:.3f}x unsharded")
                print(f"  {name:12s} extended grids hold {ext_sites:.2f}x the tokens")


if __name__ == "__main__":
    main()
