"""Host time of one natten call on CUDA (no synchronization inside the loop, so the GPU queue hides
nothing of it): what a short kernel waits on before it starts, beside the call's do_bench time and its
kernels' device time, with a cProfile of the calls.

    python3 benchmarks/probe_launch_overhead.py S5-d1 --backward
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse
import cProfile
import pstats
import time

import torch

from suite_gpu import PROBLEMS, inputs


def main() -> None:
    import natten.functional as F

    parser = argparse.ArgumentParser()
    parser.add_argument("problem", nargs="?", default="S5-d1")
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    problem = next(p for p in PROBLEMS if p[0] == args.problem)
    _pid, spatial, _B, _H, _D, _dt, kernel, dil, stride, causal = problem
    fn = {1: F.na1d, 2: F.na2d, 3: F.na3d}[len(spatial)]
    q, k, v = (x.requires_grad_(args.backward) for x in inputs(problem))
    go = torch.randn_like(q)

    def call():
        o = fn(q, k, v, kernel, dil, causal, stride=stride)
        if args.backward:
            torch.autograd.grad(o, (q, k, v), go)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.calls):
        call()
    host = (time.perf_counter() - t0) / args.calls
    torch.cuda.synchronize()
    from probe_fused_backward import kernel_times

    from suite_gpu import bench

    kernels = sum(kernel_times(call).values())
    print(
        f"{args.problem} {'fwd+bwd' if args.backward else 'forward'}: {host * 1e3:.3f} ms of host time per call, "
        f"do_bench {bench(call):.3f} ms, kernels {kernels:.3f} ms"
    )
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.calls):
        call()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
