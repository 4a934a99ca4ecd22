"""The whole-group forward (config variant 2) against the box forward on problems whose windows are
whole dilation groups: times configs and programs per SM, interleaved, best of ``--rounds``, with the
max difference to the box forward's output.

    python3 benchmarks/probe_fused_groups.py --only S5-d8 --configs '0,0,2,2,2,128;0,0,4,2,2,0' --per-sm auto,16
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse
import math

import torch

from suite_gpu import PROBLEMS, bench, inputs

EXTRA_PROBLEMS = [  # same fields as suite_gpu.PROBLEMS
    ("G-D64-7x7-d8", (56, 56), 64, 8, 64, "fp16", (7, 7), (8, 8), (1, 1), (False, False)),
    ("G-D32-1d-64-d64", (4096,), 32, 8, 32, "bf16", (64,), (64,), (1,), (False,)),
    ("G-D64-3d-3-d4", (12, 24, 24), 8, 8, 64, "bf16", (3, 3, 3), (4, 8, 8), (1, 1, 1), (False, False, False)),
]


def main() -> None:
    from natten_kernels.triton.launch_forward import na_fused_forward, set_programs_per_sm

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="S5-d8")
    parser.add_argument("--configs", default="d;0,0,2,2,2,128;0,0,2,3,2,128;0,0,2,1,2,128;0,0,4,2,2,0;0,0,2,2,2,0")
    parser.add_argument("--per-sm", default="auto,16", help="programs per SM (auto: as many as fit at once)")
    parser.add_argument("--box", default="64,32,2,3,0,128", help="the box forward's config to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for problem in (p for p in PROBLEMS + EXTRA_PROBLEMS if p[0] in args.only.split(",")):
        pid, spatial, B, H, D, _dt, kernel, dil, stride, causal = problem
        q, k, v = inputs(problem)
        bytes_moved = 4 * B * math.prod(spatial) * H * D * q.element_size()

        def call(cfg):
            return na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg)

        box = [int(x) for x in args.box.split(",")]
        ref = call(box)[0]
        runs = [("box " + args.box, box, None)]
        for c in args.configs.split(";"):
            cfg = [] if c == "d" else [int(x) for x in c.split(",")]
            for per_sm in args.per_sm.split(","):
                runs.append((f"{c} x{per_sm}", cfg, per_sm))
        times: dict[int, list[float]] = {i: [] for i in range(len(runs))}
        diffs = {}
        for _round in range(args.rounds):
            for i, (_name, cfg, per_sm) in enumerate(runs):
                set_programs_per_sm(None if per_sm in (None, "auto") else int(per_sm))
                try:
                    if i not in diffs:
                        diffs[i] = (call(cfg)[0].float() - ref.float()).abs().max().item()
                    times[i].append(bench(lambda: call(cfg)))
                except Exception as e:  # report and go on
                    diffs[i] = f"FAILED {type(e).__name__}: {e!s:.160}"
        set_programs_per_sm(None)
        for i, (name, _cfg, _p) in enumerate(runs):
            ts = times[i]
            if ts:
                gbps = bytes_moved / (min(ts) * 1e-3) / 1e9
                ms = " / ".join(f"{t:.3f}" for t in ts)
                print(f"{pid:16s} {name:24s} {ms} ms  best {gbps:6.0f} GB/s  max diff {diffs[i]}", flush=True)
            else:
                print(f"{pid:16s} {name:24s} {diffs[i]}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
