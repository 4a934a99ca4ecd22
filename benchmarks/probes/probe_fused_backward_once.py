"""One default fused backward of a suite problem, after a warm-up call: the target for a profiler
(``ncu -k regex:na_bwd --launch-skip 3``) that should see the backward's kernels and nothing else.

    python3 benchmarks/probe_fused_backward_once.py S1
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import sys

import torch
from probe_fused_backward import backward_fn

from suite_gpu import PROBLEMS, inputs


def main() -> None:
    pid = sys.argv[1] if len(sys.argv) > 1 else "S1"
    problem = next(p for p in PROBLEMS if p[0] == pid)
    fn = backward_fn(problem, [], inputs(problem))
    for _ in range(2):
        fn()
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
