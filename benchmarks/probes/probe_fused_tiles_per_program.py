"""Does the fused forward pay a fixed cost per program? Dense 1D attention (window = sequence, every
tile full and unmasked) at the same tokens x heads but shorter sequences, so each program runs fewer
key tiles (256 ... 8), against cuDNN on the same shapes, for each forward config given.

    python3 benchmarks/probe_fused_tiles_per_program.py --configs '128,128,8,3,1;128,128,8,3,0'
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))  # benchmarks/: suite_gpu, common

import argparse

import torch

from suite_gpu import bench

H, D, TOKENS = 16, 128, 65536  # B * N constant: the same grid of query tiles in every row


def main() -> None:
    from natten_kernels.triton.launch_forward import na_fused_forward
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="128,128,8,3,1")
    parser.add_argument("--lengths", default="32768,4096,2048,1024")
    args = parser.parse_args()
    configs = [[int(x) for x in c.split(",")] for c in args.configs.split(";") if c]
    for n in (int(x) for x in args.lengths.split(",")):
        b = TOKENS // n
        q, k, v = (torch.randn(b, n, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * b * H * n * n * D
        qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            cudnn = bench(lambda: sdpa(qh, kh, vh))
        row = [f"N={n:6d} B={b:3d} key tiles/program {n // 128:4d}: cuDNN {flops / cudnn / 1e9:6.1f} TFLOP/s"]
        for cfg in configs:
            ms = bench(lambda: na_fused_forward(q, k, v, None, None, None, [n], [1], [1], [False], D**-0.5, cfg))
            row.append(f"{cfg}: {flops / ms / 1e9:6.1f} ({cudnn / ms:.3f} x cuDNN)")
        print("  ".join(row), flush=True)


if __name__ == "__main__":
    main()
