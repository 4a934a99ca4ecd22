"""The gather forward (variant 2: per-sub-box halos, fused_forward_gather.py) against the box forward
(the default config before it) on the memory-bound problems: interleaved rounds, each config's tile
efficiency, rate (pairs computed per microsecond), bandwidth on the q/k/v/o bytes, and its largest
difference from the box forward's output.

    python3 benchmarks/probe_fused_gather.py --only S4,S5-d1,S5-d8 [--configs '16,128,4,1,2;...']
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import math

import torch

from common import compiled_stats
from suite_gpu import PROBLEMS, _attended, _bench, _inputs, _tile_efficiency

# per head dim: [queries per tile, keys per chunk, warps, stages, 2(, tiles per program: ops' default)]
DEFAULT_CONFIGS = {
    32: "16,128,1,1,2;16,128,2,1,2;16,128,4,1,2;16,64,1,1,2;32,128,2,1,2;16,128,1,2,2;64,64,4,1,2;64,32,2,1,2",
    64: "16,256,1,1,2;16,256,2,1,2;16,256,4,1,2;16,128,1,1,2;16,128,2,1,2;32,64,2,1,2;64,32,4,1,2;16,256,2,2,2",
    128: "16,128,1,2,2;32,64,2,2,2;64,64,4,2,2;64,32,4,2,2",
}


def main() -> None:
    import natten_kernels.triton.standalone as standalone

    standalone.ensure_ops()
    from natten_kernels.triton import ops

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="S4,S5-d1,S5-d8")
    parser.add_argument("--configs", default="", help="';'-separated configs (default: per head dim)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--box", default="", help="the box config to compare with (default: choose_config's box)")
    args = parser.parse_args()
    per_default = ops.GATHER_TILES_PER_PROGRAM
    for problem in (p for p in PROBLEMS if p[0] in args.only.split(",")):
        pid, spatial, B, H, D, _dt, kernel, dil, stride, causal = problem
        q, k, v = _inputs(problem)
        geo = (spatial, kernel, dil, stride, causal)
        box = [int(x) for x in args.box.split(",")] if args.box else None
        if box is None:
            from natten_kernels.triton import tiling

            saved = dict(tiling._FWD_RATES[tiling._bucket(D)])
            tiling._FWD_RATES[tiling._bucket(D)] = {c: r for c, r in saved.items() if c[4] != tiling.GATHER}
            tiling.choose_config.cache_clear()
            box = list(ops._parse([], D, q.dtype, geo, False, q.device))
            tiling._FWD_RATES[tiling._bucket(D)] = saved
            tiling.choose_config.cache_clear()
        spec = args.configs or DEFAULT_CONFIGS[min(c for c in DEFAULT_CONFIGS if c >= D)]
        configs = [box] + [[int(x) for x in c.split(",")] for c in spec.split(";")]
        bytes_moved = 4 * B * math.prod(spatial) * H * D * q.element_size()
        reference = None
        times: dict[int, list[float]] = {}
        errors: dict[int, float] = {}

        def call(cfg):
            ops.GATHER_TILES_PER_PROGRAM = cfg[5] if len(cfg) > 5 else per_default
            return ops.na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg[:5])

        for i, cfg in enumerate(configs):
            try:
                out = call(cfg)[0]
                torch.cuda.synchronize()
            except Exception as e:  # a config that does not compile or launch: say so, keep going
                print(f"{pid:8s} {cfg!s:24s} FAILED {type(e).__name__}: {e!s:.200}", flush=True)
                continue
            if reference is None:
                reference = out.float()
            errors[i] = float((out.float() - reference).abs().max())
            times[i] = []
        for _round in range(args.rounds):
            for i in times:
                cfg = configs[i]
                fn = lambda: call(cfg)
                times[i].append(_bench(fn))
        useful = B * H * _attended(spatial, kernel, dil, stride, causal)
        for i, ts in times.items():
            if not ts:  # --rounds 0: launched once each (an ncu target)
                continue
            cfg = configs[i]
            eff = _tile_efficiency(problem, cfg[:5])
            best = min(ts)
            rate = useful / eff / (best * 1e3)
            gbps = bytes_moved / (best * 1e-3) / 1e9
            ms = " / ".join(f"{t:.3f}" for t in ts)
            print(
                f"{pid:8s} {cfg!s:24s} eff {eff:.3f} {ms} ms  best {gbps:6.0f} GB/s  "
                f"{rate / 1e3:.2f} Gpairs/ms computed  max|diff| {errors[i]:.2e}",
                flush=True,
            )
        torch.cuda.empty_cache()
    from natten_kernels.triton.fused_forward_gather import na_fwd_gather_kernel

    compiled_stats([na_fwd_gather_kernel], ("T0", "T1", "T2", "BLOCK_K", "NCHUNK", "PER"))


if __name__ == "__main__":
    main()
