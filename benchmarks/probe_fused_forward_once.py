"""Forward calls of a suite problem (default config, or one given), two warm-up calls first: the
target for a profiler (``ncu -k regex:na_fwd --launch-skip 2 --launch-count 1``).

    python3 benchmarks/probe_fused_forward_once.py S5-d1 [32,32,1,3,1,128]
"""

from __future__ import annotations

import sys

import torch

from suite_gpu import PROBLEMS, _inputs


def main() -> None:
    import natten_kernels.triton.standalone as standalone

    standalone.ensure_ops()
    from natten_kernels.triton import ops

    pid = sys.argv[1] if len(sys.argv) > 1 else "S5-d1"
    cfg = [int(x) for x in sys.argv[2].strip("[]").split(",")] if len(sys.argv) > 2 else []
    problem = next(p for p in PROBLEMS if p[0] == pid)
    _pid, _spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
    q, k, v = _inputs(problem)
    for _ in range(3):
        ops.na_fused_forward(q, k, v, None, None, None, kernel, dil, stride, causal, D**-0.5, cfg)
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
