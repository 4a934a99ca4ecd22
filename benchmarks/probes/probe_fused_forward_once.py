"""Forward calls of a suite problem (default config, or one given), two warm-up calls first: the
target for a profiler (``ncu -k regex:na_fwd --launch-skip 2 --launch-count 1``).

    python3 benchmarks/probe_fused_forward_once.py S5-d1 [32,32,1,3,1,128]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import sys

import torch

from suite_gpu import PROBLEMS, inputs


def main() -> None:
    from natten_kernels.triton.launch_forward import na_fused_forward

    pid = sys.argv[1] if len(sys.argv) > 1 else "S5-d1"
    cfg = [int(x) for x in sys.argv[2].strip("[]").split(",")] if len(sys.argv) > 2 else []
    problem = next(p for p in PROBLEMS if p[0] == pid)
    _pid, _spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
    q, k, v = inputs(problem)
    for _ in range(3):
        na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg)
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
