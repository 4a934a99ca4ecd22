"""Is the box forward on small windows latency-bound by occupancy? Times forward configs (the sixth
entry is a register cap, Triton's ``maxnreg``) on the memory-bound problems, interleaved, with each
compiled kernel's registers, spills and shared memory.

    python3 benchmarks/probe_fused_occupancy.py --only S5-d1 --configs '64,32,2,3,0;64,32,2,3,0,128'
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse
import math

import torch

from common import compiled_stats
from suite_gpu import PROBLEMS, bench, inputs

# beyond S4/S5 (same fields as suite_gpu.PROBLEMS): head dim 32 on longer key loops (does a register
# cap measured on short ones hold?), head dim 64 with dilation (TMA through per-program descriptors)
EXTRA_PROBLEMS = [
    ("D32-k13", (64, 64), 16, 8, 32, "fp16", (13, 13), (1, 1), (1, 1), (False, False)),
    ("D32-k31", (128, 128), 4, 8, 32, "fp16", (31, 31), (1, 1), (1, 1), (False, False)),
    ("D32-1d-k255", (16384,), 4, 8, 32, "fp16", (255,), (1,), (1,), (False,)),
    ("D32-3d-k7", (16, 32, 32), 4, 8, 32, "fp16", (7, 7, 7), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ("D64-k13-d2", (128, 128), 16, 16, 64, "fp16", (13, 13), (2, 2), (1, 1), (False, False)),
    ("D64-k7-d4", (64, 64), 32, 8, 64, "fp16", (7, 7), (4, 4), (1, 1), (False, False)),
]
# [block_q, block_k, warps, stages, variant(, maxnreg)]; d = the default config
DEFAULT_CONFIGS = {
    32: "d;64,32,2,3,0,128;64,32,2,3,0,96;64,32,1,3,0;32,32,1,3,0;32,16,1,3,0;64,16,2,4,0;64,32,2,4,0",
    64: "d;64,16,4,3,0,128;64,16,4,3,0,96;64,16,2,3,0;64,32,4,3,0;64,16,4,4,0;32,32,2,3,0;64,16,4,3,1",
}


def main() -> None:
    from natten_kernels.triton.launch_forward import na_fused_forward

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="S4,S5-d1,S5-d8", help="ids of suite_gpu.PROBLEMS or EXTRA_PROBLEMS")
    parser.add_argument("--configs", default="")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for problem in (p for p in PROBLEMS + EXTRA_PROBLEMS if p[0] in args.only.split(",")):
        pid, spatial, B, H, D, _dt, kernel, dil, stride, causal = problem
        q, k, v = inputs(problem)
        spec = args.configs or DEFAULT_CONFIGS[32 if D <= 32 else 64]
        configs = [[] if c == "d" else [int(x) for x in c.split(",")] for c in spec.split(";")]
        bytes_moved = 4 * B * math.prod(spatial) * H * D * q.element_size()

        def call(cfg):
            return na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg)

        times: dict[int, list[float]] = {}
        for i, cfg in enumerate(configs):
            try:
                call(cfg)
                torch.cuda.synchronize()
                times[i] = []
            except Exception as e:
                print(f"{pid:8s} {cfg!s:24s} FAILED {type(e).__name__}: {e!s:.200}", flush=True)
        for _round in range(args.rounds):
            for i in times:
                cfg = configs[i]
                times[i].append(bench(lambda: call(cfg)))
        for i, ts in times.items():
            if ts:
                gbps = bytes_moved / (min(ts) * 1e-3) / 1e9
                ms = " / ".join(f"{t:.3f}" for t in ts)
                print(f"{pid:8s} {configs[i]!s:24s} {ms} ms  best {gbps:6.0f} GB/s", flush=True)
        torch.cuda.empty_cache()
    from natten_kernels.triton.fused_forward import na_fwd_kernel

    compiled_stats([na_fwd_kernel], ("T0", "T1", "T2", "KB0", "KB1", "KB2", "TMA_HOST"))


if __name__ == "__main__":
    main()
