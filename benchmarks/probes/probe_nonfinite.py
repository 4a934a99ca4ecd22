"""What keeping non-finite values of v inside their queries' windows costs the box forward: the
experimental NONFINITE_SAFE switch (one more product per key tile, launch_forward.NONFINITE_SAFE)
against the default, interleaved in one run, and whether it isolates a NaN as the reference does.

    python benchmarks/probes/probe_nonfinite.py [--only S1,S2,S3,S5-d1]
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu
from suite_gpu import PROBLEMS, bench, inputs


def main() -> None:
    from natten_kernels.triton import launch_forward as lf

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="S1,S2,S3,S5-d1")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    q = torch.randn(1, 64, 64, 2, 32, device="cuda", dtype=torch.float16)
    v = q.clone()
    v[0, 30, 30] = float("nan")
    for safe in (False, True):
        lf.NONFINITE_SAFE[0] = safe
        lf.clear_plans()
        out, _ = lf.na_fused_forward(q, q, v, None, None, None, [7, 7], [1, 1], [1, 1], [False, False], 0.2, [])
        print(
            f"NaN at v[30, 30], 7x7 window: {int(out.isnan().any(-1).any(-1).sum())} NaN queries "
            f"(safe={safe}; exact: 49)"
        )
    for problem in (p for p in PROBLEMS if p[0] in args.only.split(",")):
        pid, _spatial, *_r, D, _dt, kernel, dil, stride, causal = problem
        qq, kk, vv = inputs(problem)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for safe in (False, True):
                lf.NONFINITE_SAFE[0] = safe
                lf.clear_plans()
                times[safe].append(
                    bench(
                        lambda: lf.na_fused_forward(
                            qq, kk, vv, None, None, None, kernel, dil, stride, causal, D**-0.5, []
                        )
                    )
                )
        base, safe_ms = statistics.median(times[False]), statistics.median(times[True])
        print(f"{pid:8s} default {base:8.3f} ms   non-finite-safe {safe_ms:8.3f} ms   x{safe_ms / base:.3f}")
    lf.NONFINITE_SAFE[0] = False


if __name__ == "__main__":
    main()
