"""Where the fused backward's time goes: per-kernel device times (torch.profiler) of the backward's
passes (delta, dq, dk/dv) for several configs, next to cuDNN's forward and forward+backward on the
same tokens, in one process. Configs are the launcher's backward configs
(``natten_kernels.triton.configs.parse_config``):
``resident,streamed,warps,stages,variant[,dq_bq,dq_bk,dq_warps,dq_stages,dq_tma]``.

    python3 benchmarks/probe_fused_backward.py --only S1,S2 --configs '64,32,4,3;128,64,8,2,0,128,64,8,3,1'
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse
import math
import multiprocessing as mp
import statistics
import time
from collections import defaultdict

import torch

from common import compiled_stats
from suite_gpu import PROBLEMS, bench, cudnn, inputs, useful_flops

DEFAULT_CONFIGS = "d"  # d: the launcher's default ([])


def _args(problem):
    _pid, _spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
    return (list(kernel), list(dil), list(stride), list(causal), D**-0.5)


def backward_fn(problem, cfg, tensors):
    from natten_kernels.triton.launch_backward import na_fused_backward
    from natten_kernels.triton.launch_forward import na_fused_forward

    q, k, v = tensors
    out, lse = na_fused_forward(q, k, v, None, None, None, *_args(problem), [])
    go = torch.randn_like(out)
    return lambda: na_fused_backward(go, q, k, v, out, lse, None, None, None, None, *_args(problem), cfg)


def _warm(job):
    try:
        problem, cfg = job
        backward_fn(problem, cfg, inputs(problem))()
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{type(e).__name__}: {e!s:.300}"


def kernel_times(fn, reps: int = 5) -> dict[str, float]:
    """Median device ms per kernel name over ``reps`` calls."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = defaultdict(list)
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            times[evt.name].append(evt.time_range.elapsed_us() / 1e3)
    return {name: statistics.median(ts) * len(ts) / reps for name, ts in times.items()}


def _profile_autograd(problem, tensors) -> float:
    """forward+backward through natten.functional (default configs): its time and every kernel's."""
    import natten.functional as F

    spatial, kernel, dil, stride, causal = problem[1], *problem[6:]
    fn = {1: F.na1d, 2: F.na2d, 3: F.na3d}[len(spatial)]
    qg, kg, vg = (x.detach().requires_grad_(True) for x in tensors)
    go = torch.randn_like(qg)

    def fb():
        o = fn(qg, kg, vg, kernel, dil, causal, stride=stride)
        torch.autograd.grad(o, (qg, kg, vg), go)

    total = bench(fb)
    parts = kernel_times(fb)
    split = "  ".join(f"{_short(n)} {ms:.3f}" for n, ms in sorted(parts.items(), key=lambda x: -x[1]))
    print(f"  autograd fwd+bwd {total:.3f} ms; kernels sum {sum(parts.values()):.3f}: [{split}]", flush=True)
    return total


def _compiled_stats() -> None:
    """Registers, spills and shared memory of every compiled backward kernel (tile constexprs named)."""
    from natten_kernels.triton.fused_backward import na_bwd_dkdv_kernel, na_bwd_dq_kernel
    from natten_kernels.triton.fused_forward import na_fwd_kernel

    wanted = ("T0", "T1", "T2", "KB0", "KB1", "KB2", "TMA", "TMA_HOST", "RES_TMA", "Q_TMA", "RANK")
    compiled_stats((na_bwd_dq_kernel, na_bwd_dkdv_kernel, na_fwd_kernel), wanted)


def _short(name: str) -> str:
    for key in ("na_bwd_dq", "na_bwd_dkdv", "na_bwd_delta", "na_bwd_drpb", "na_fwd"):
        if key in name:
            return key.removeprefix("na_bwd_")
    return name[:28]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="S1,S2,S6")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated backward configs ('d': default)")
    parser.add_argument("--precompile", type=int, default=12)
    parser.add_argument("--autograd", action="store_true", help="also profile forward+backward through natten")
    args = parser.parse_args()
    only = args.only.split(",")
    problems = [p for p in PROBLEMS if p[0] in only]
    configs = [[] if c == "d" else [int(x) for x in c.split(",")] for c in args.configs.split(";") if c]
    jobs = [(p, c) for p in problems for c in configs]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(args.precompile) as pool:
        errors = dict(zip(range(len(jobs)), pool.map(_warm, jobs, chunksize=1)))
    print(f"{len(jobs)} jobs compiled in {time.perf_counter() - t0:.0f}s", flush=True)
    from natten_kernels.triton.configs import parse_config
    from natten_kernels.triton.launch_forward import na_fused_forward

    for problem in problems:
        pid, _spatial, B, H, D, _dts, kernel, dil, stride, causal = problem
        tensors = inputs(problem)
        qh, kh, vh = (x.reshape(B, -1, H, D).transpose(1, 2).contiguous() for x in tensors)
        c_fwd, c_fb = cudnn(qh, kh, vh, True)
        del qh, kh, vh
        fwd = bench(lambda: na_fused_forward(*tensors, None, None, None, *_args(problem), []))
        useful = useful_flops(problem) / (4 * B * H * math.prod(problem[1]) ** 2 * D)
        print(
            f"{pid}: ours fwd {fwd:.3f} ms (x cuDNN {useful * c_fwd / fwd:.3f}); cuDNN fwd {c_fwd:.3f} ms, "
            f"fwd+bwd {c_fb:.3f} (bwd {c_fb - c_fwd:.3f})"
        )
        if args.autograd:
            total = _profile_autograd(problem, tensors)
            print(f"  autograd fwd+bwd x cuDNN {useful * c_fb / total:.3f}", flush=True)
        for i, cfg in enumerate(configs):
            err = errors[problems.index(problem) * len(configs) + i]
            geo = (problem[1], kernel, dil, stride, causal)
            resolved = list(parse_config(cfg, D, tensors[0].dtype, geo, True, torch.device("cuda")))
            if err:
                print(f"  {resolved}: FAILED {err}")
                continue
            fn = backward_fn(problem, cfg, tensors)
            total = bench(fn, rep=300)
            parts = kernel_times(fn)
            split = "  ".join(f"{_short(n)} {ms:.3f}" for n, ms in sorted(parts.items(), key=lambda x: -x[1]))
            # the fwd+bwd ratio (useful FLOPs over cuDNN's dense ones) had this backward run after our forward
            ratio = useful * c_fb / (fwd + total)
            print(f"  {resolved}: bwd {total:.3f} ms  [{split}]  fwd+bwd x cuDNN {ratio:.3f}", flush=True)
        tensors = None
        torch.cuda.empty_cache()
    _compiled_stats()


if __name__ == "__main__":
    main()
