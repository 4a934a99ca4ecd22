"""Does the fused S5 forward's time depend on where its tensors sit? (perf-notes: 0.375-0.787 ms across
fresh allocations.) Times ``na2d`` on S5 (heads-last, fp16) for q/k/v placed as views into one buffer at
chosen byte offsets, each offset in two different buffers, then for independent fresh allocations.

    python3 benchmarks/probe_fused_placement.py
"""

from __future__ import annotations

import torch
import triton

import natten.functional as F

B, S, H, D, K = 128, (56, 56), 4, 32, (7, 7)
SHAPE = (B, *S, H, D)
N = B * S[0] * S[1] * H * D  # elements per tensor
OFFSETS = [0, 256, 4096, 65536, 1 << 20, (1 << 21) - 4096]  # bytes


def bench(q, k, v) -> float:
    return float(
        triton.testing.do_bench(lambda: F.na2d(q, k, v, K, scale=1.0), warmup=25, rep=100, return_mode="median")
    )


def placed(offset: int):
    """q, k, v as consecutive views of one buffer, the first at ``offset`` bytes, each 2 MiB-aligned after it."""
    gap = -(-N * 2 // (1 << 21)) * (1 << 21)  # bytes per tensor, rounded to 2 MiB
    buf = torch.empty(offset + 3 * gap + 4096, dtype=torch.uint8, device="cuda")
    views = []
    for i in range(3):
        start = offset + i * gap
        t = buf[start : start + 2 * N].view(torch.float16).view(SHAPE)
        t.normal_()
        views.append(t)
    return buf, views


def main() -> None:
    keep = []
    for off in OFFSETS:
        row = []
        for _ in range(2):
            buf, (q, k, v) = placed(off)
            keep.append(buf)  # stay live: the next buffer takes other pages
            row.append(bench(q, k, v))
        print(f"offset {off:>8} B: " + " / ".join(f"{t:.3f}" for t in row), flush=True)
    fresh = []
    for _ in range(6):
        q, k, v = (torch.randn(SHAPE, device="cuda", dtype=torch.float16) for _ in range(3))
        keep.append((q, k, v))
        fresh.append(bench(q, k, v))
    print("fresh allocations: " + " / ".join(f"{t:.3f}" for t in fresh))
    same = [bench(*keep[-1]) for _ in range(3)]
    print("same tensors again: " + " / ".join(f"{t:.3f}" for t in same))


if __name__ == "__main__":
    main()
