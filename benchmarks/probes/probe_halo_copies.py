"""The extended grid's copies two ways, interleaved in one run: plain indexing (element by element in
the tensors' dtype) against natten.distributed.halo's 8-byte words, for the halo blocks (as the
simulation copies them) and the shard copied into its extended grid. Medians of ``--iters``; the host
time of issuing the copies is reported alone (copies queued without a synchronize in between).

    python benchmarks/probes/probe_halo_copies.py [--problem S6-s] [--iters 20]
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import suite_distributed as sd
from natten.distributed.halo import _owned, assign, selector
from natten.distributed.plan import rank_plan


def halo(plans, exts, kv, words: bool) -> None:
    for pl, pair in zip(plans, exts):
        lo = [a.lo for a in pl.axes]
        for x, e in zip(kv, pair):
            for t in pl.recv:
                src = selector(tuple(tuple(j + o for j in ix) for ix, o in zip(t.index, lo)), x.device)
                dst = selector(t.index, x.device)
                if words:
                    assign(e, dst, x[src])
                else:
                    e[dst] = x[src]


def shard(plans, exts, kv, layout, words: bool) -> None:
    for pl, pair in zip(plans, exts):
        for x, e in zip(kv, pair):
            s = x[sd._box(layout, pl.rank)]
            if words:
                assign(e, _owned(pl, s.shape[1:-2]), s)
            else:
                e[_owned(pl, s.shape[1:-2])] = s


def host_ms(fn, n=20) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problem", action="append")
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    for pid in args.problem or ["S3-s16", "S6", "S6-s"]:
        spec = sd._spec(sd._problem(pid))
        shape = (spec["batch"], *spec["spatial"], spec["heads"], spec["head_dim"])
        kv = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        for world in (2, 8):
            for axes, grid in sd._splits(pid, world):
                layout = sd._layout(spec["spatial"], axes, grid)
                plans = [rank_plan(layout, sd._params(spec), r) for r in range(layout.world)]
                exts = [[sd._assemble(x, layout, pl) for x in kv] for pl in plans]
                blocks = sum(len(pl.recv) for pl in plans) * 2
                res = {}
                for _ in range(3):  # interleaved
                    for words in (False, True):
                        for part, fn in (
                            ("halo", lambda: halo(plans, exts, kv, words)),
                            ("shard", lambda: shard(plans, exts, kv, layout, words)),
                        ):
                            dev = sd._timed(fn, "cuda", warmup=2, iters=args.iters, max_seconds=30)
                            res.setdefault((part, words), []).append((dev, host_ms(fn)))
                for (part, words), runs in res.items():
                    dev = sorted(r[0] for r in runs)[1]
                    host = sorted(r[1] for r in runs)[1]
                    print(
                        f"{pid:7s} {sd._split_name(axes, grid):16s} P={world} {part:5s} "
                        f"{'words' if words else 'plain'}: {dev:7.3f} ms (host issue {host:6.3f} ms; {blocks} blocks)"
                    )


if __name__ == "__main__":
    main()
