"""Run the unfused qk / av kernels once per config on S5 (for a profiler such as ``ncu`` to capture).

    ncu --clock-control none -k regex:na_ python3 benchmarks/probe_unfused.py [config ...]

Each config is ``variant,block_q,block_k,block_d,num_warps,path`` (triton/unfused_ops.py); every config
runs qk forward then av forward once, after one warm-up launch of each that compiles it.
"""

from __future__ import annotations

import sys

import torch
from natten_kernels.triton import unfused_ops

DEFAULT = ["1,32,64,8,4,2", "1,64,64,8,4,2", "1,32,64,32,4,1", "1,64,64,32,4,0"]


def main(argv: list[str]) -> None:
    B, H, S, D, K = 128, 4, (56, 56), 32, (7, 7)
    q, k, v = (torch.randn(B, H, *S, D, device="cuda", dtype=torch.float16) for _ in range(3))
    geo = (list(K), [1, 1], [1, 1], [False, False])
    w = unfused_ops.na_qk_forward(q, k, None, *geo, [1]).softmax(-1)
    for text in argv or DEFAULT:
        cfg = [int(c) for c in text.split(",")]
        for _ in range(2):  # the first pass compiles
            unfused_ops.na_qk_forward(q, k, None, *geo, cfg)
            unfused_ops.na_av_forward(w, v, *geo, cfg)
        torch.cuda.synchronize()
        print("ran", cfg, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
