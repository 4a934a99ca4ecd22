"""Does the tile-shape search (tiling.tile_shapes: boxes chosen on pairs computed) pay off? Times the
fused forward of suite problems with the search on (the default) and off (box()'s proposal only),
interleaved, three times each, with each run's boxes and tile efficiency.

    python3 benchmarks/probe_tile_search.py --only S4,S5-d1,S6,S6-s
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse

import torch

from suite_gpu import PROBLEMS, bench, inputs


def main() -> None:
    from natten_kernels.triton import configs, tiling
    from natten_kernels.triton.launch_forward import clear_plans, na_fused_forward

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="S4,S5-d1,S6,S6-s,S7-causal")
    args = parser.parse_args()
    original = tiling.tile_shapes
    for problem in (p for p in PROBLEMS if p[0] in args.only.split(",")):
        pid, spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
        q, k, v = inputs(problem)
        cfg = list(configs.parse_config([], D, q.dtype, (spatial, kernel, dil, stride, causal), False, q.device))
        rows = {}
        for _round in range(3):
            for search in (True, False):
                configs.tile_shapes = lambda *a, s=search: original(*a[:7], s and (a[7] if len(a) > 7 else True))
                clear_plans()
                fn = lambda: na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg)
                fn()
                rows.setdefault(search, []).append(bench(fn))
        configs.tile_shapes = original
        for search, times in rows.items():
            qb, kb = original(kernel, dil, stride, spatial, cfg[0], cfg[1], causal, search)
            eff = tiling.tile_efficiency(spatial, kernel, dil, stride, causal, qb, kb)
            ms = " / ".join(f"{t:.3f}" for t in times)
            print(f"{pid:10s} cfg {cfg} search {search!s:5s} boxes {qb} {kb} eff {eff:.3f}: {ms} ms", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
