"""The GPU suite (design.md section 6, S1-S7): natten's Triton kernels beside dense SDPA (cuDNN, flash),
FlexAttention with a neighborhood BlockMask, and Flex with no mask (a plain Triton dense-attention
kernel), all in the same run. ``python benchmarks/run.py --suite gpu [--only S1,S3] [--no-flex]``.

Effective TFLOP/s = 4 * B * H * N * K * D / time (backward counts 2.5x forward); ratios are against
cuDNN dense SDPA measured in this run; medians of ``triton.testing.do_bench`` (L2 flushed by it).
Tile efficiency = useful (query, key) pairs / pairs the kernel computes (from its tile shapes).
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import functools
import math
import time

import torch

from common import Recorder

# id, spatial, B, H, D, dtype, kernel, dilation, stride, causal
PROBLEMS = [
    ("S1", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (1,), (False,)),
    ("S1-causal", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (1,), (True,)),
    ("S1-s256", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (256,), (False,)),
    ("S2", (128, 128), 2, 16, 128, "bf16", (31, 31), (1, 1), (1, 1), (False, False)),
    ("S3", (256, 256), 1, 24, 128, "bf16", (80, 80), (1, 1), (1, 1), (False, False)),
    ("S3-s16", (256, 256), 1, 24, 128, "bf16", (80, 80), (1, 1), (16, 16), (False, False)),
    ("S4", (128, 128), 16, 16, 64, "fp16", (13, 13), (1, 1), (1, 1), (False, False)),
    ("S5-d1", (56, 56), 128, 4, 32, "fp16", (7, 7), (1, 1), (1, 1), (False, False)),
    ("S5-d8", (56, 56), 128, 4, 32, "fp16", (7, 7), (8, 8), (1, 1), (False, False)),
    ("S6", (30, 48, 80), 1, 24, 128, "bf16", (18, 24, 24), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ("S6-s", (30, 48, 80), 1, 24, 128, "bf16", (18, 24, 24), (1, 1, 1), (16, 8, 8), (False, False, False)),
    ("S7-causal", (24, 44, 80), 1, 16, 128, "bf16", (8, 12, 24), (1, 1, 1), (1, 1, 1), (True, False, False)),
    ("S7-dil", (24, 44, 80), 1, 16, 128, "bf16", (24, 4, 16), (1, 11, 5), (1, 1, 1), (False, False, False)),
]
TARGETS = {"S1": 0.65, "S1-s256": 0.75, "S2": 0.40, "S3": 0.55, "S3-s16": 0.75, "S6": 0.40, "S6-s": 0.75}
DT = {"bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gpu suite")
    g.add_argument("--only", default="", help="comma-separated problem ids (default: all)")
    g.add_argument("--no-flex", action="store_true", help="skip FlexAttention anchors (compile time)")
    g.add_argument("--no-backward", action="store_true")


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def _axis_windows(n, k, d, s, causal, device="cuda"):
    """Per-axis (start, end) of group-local windows for every index (torch, for the Flex mask)."""
    i = torch.arange(n, device=device)
    g = i % d
    p = i // d
    nn = (n - g + d - 1) // d
    if causal:
        c = torch.minimum((p // s) * s + s - 1, nn - 1)
        start = torch.clamp(c - k + 1, min=0)
        end = p + 1
    else:
        c = torch.minimum((p // s) * s + s // 2, nn - 1)
        start = torch.minimum(torch.clamp(c - k // 2, min=0), nn - k)
        end = start + k
    return g, p, start, end


def _flex_mask(spatial, kernel, dil, stride, causal):
    tabs = [_axis_windows(n, k, d, s, c) for n, k, d, s, c in zip(spatial, kernel, dil, stride, causal)]
    sizes = list(spatial)

    def mask_mod(b, h, qi, ki):
        ok = qi >= 0
        rq, rk = qi, ki
        for a in reversed(range(len(sizes))):
            g, p, st, en = tabs[a]
            xq, xk = rq % sizes[a], rk % sizes[a]
            rq, rk = rq // sizes[a], rk // sizes[a]
            pk = p[xk]
            ok = ok & (g[xq] == g[xk]) & (pk >= st[xq]) & (pk < en[xq])
        return ok

    return mask_mod


def tile_efficiency(spatial, kernel, dil, stride, causal, cfg) -> float:
    from natten_kernels.triton.ops import _pad3, tile_shapes

    qbox, kbox = tile_shapes(kernel, dil, stride, spatial, cfg[0], cfg[1])
    L, ks, dl, st, cz = (_pad3(spatial, 1), _pad3(kernel, 1), _pad3(dil, 1), _pad3(stride, 1), _pad3(causal, False))
    useful, computed = 1.0, 1.0
    for a in range(3):
        u = c = 0
        for g in range(dl[a]):
            n = -(-(L[a] - g) // dl[a])
            _gg, _p, start, end = (x.cpu() for x in _axis_windows(n, ks[a], 1, st[a], cz[a], "cpu"))
            u += int((end - start).sum())
            for t0 in range(0, n, qbox[a]):
                last = min(t0 + qbox[a], n) - 1
                span = int(end[last] - start[t0])
                c += qbox[a] * math.ceil(span / kbox[a]) * kbox[a]
        useful *= u
        computed *= c
    return useful / computed


def run(args: argparse.Namespace) -> tuple[Recorder, bool]:
    import natten_kernels.triton.standalone as standalone

    standalone.ensure_ops()  # only when the compiled library is missing
    from natten_kernels.triton.tiling import default_config
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    import natten.functional as F

    rec = Recorder("gpu", "cuda")
    only = {x for x in args.only.split(",") if x}
    met = True
    lines = []
    for pid, spatial, B, H, D, dts, kernel, dil, stride, causal in PROBLEMS:
        if only and pid not in only:
            continue
        dt = DT[dts]
        N = math.prod(spatial)
        K = math.prod(kernel)
        if any(causal):  # keys actually attended, averaged: causal windows are partly empty
            K = _attended(spatial, kernel, dil, stride, causal) / N
        flops = 4 * B * H * N * K * D
        q, k, v = (torch.randn(B, *spatial, H, D, device="cuda", dtype=dt) for _ in range(3))
        row = {
            "problem": pid,
            "spatial": list(spatial),
            "B": B,
            "H": H,
            "D": D,
            "dtype": dts,
            "kernel": list(kernel),
            "dilation": list(dil),
            "stride": list(stride),
            "causal": list(causal),
        }
        res = {}
        t0 = time.perf_counter()
        fn = {1: F.na1d, 2: F.na2d, 3: F.na3d}[len(spatial)]
        na = functools.partial(fn, q, k, v, kernel, dil, causal, stride=stride)
        na()
        torch.cuda.synchronize()
        res["natten-triton"] = _bench(na)
        first_call = time.perf_counter() - t0
        qh, kh, vh = (x.reshape(B, N, H, D).transpose(1, 2).contiguous() for x in (q, k, v))
        for name, backend in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    res[name] = _bench(lambda: sdpa(qh, kh, vh))
            except Exception as e:
                print(f"  {pid}: {name} unavailable: {e!s:.80}")
        if not args.no_flex:
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention

                flex = torch.compile(flex_attention)
                res["flex-dense"] = _bench(lambda: flex(qh, kh, vh))
                bm = create_block_mask(
                    _flex_mask(spatial, kernel, dil, stride, causal), None, None, N, N, device="cuda"
                )
                res["flex-na"] = _bench(lambda: flex(qh, kh, vh, block_mask=bm))
            except Exception as e:
                print(f"  {pid}: flex unavailable: {e!s:.120}")
        dense_flops = 4 * B * H * N * N * D
        cudnn = res.get("sdpa-cudnn")
        cudnn_rate = dense_flops / (cudnn * 1e-3) if cudnn else None
        bytes_moved = 4 * B * N * H * D * q.element_size()
        eff = tile_efficiency(spatial, kernel, dil, stride, causal, default_config(D, q.element_size()))
        for impl, ms in res.items():
            useful = flops if impl in ("natten-triton", "flex-na") else dense_flops
            rate = useful / (ms * 1e-3)
            r = rec.add(
                "forward",
                **row,
                impl=impl,
                ms=ms,
                tflops=rate / 1e12,
                ratio_vs_cudnn=(rate / cudnn_rate) if cudnn_rate else None,
                gbps=bytes_moved / (ms * 1e-3) / 1e9 if impl == "natten-triton" else None,
                tile_efficiency=eff if impl == "natten-triton" else None,
                first_call_s=first_call if impl == "natten-triton" else None,
            )
            lines.append(r)
        if pid in TARGETS and cudnn_rate:
            ratio = flops / (res["natten-triton"] * 1e-3) / cudnn_rate
            met &= ratio >= TARGETS[pid]
        if not args.no_backward:
            qg, kg, vg = (x.detach().requires_grad_(True) for x in (q, k, v))
            out = fn(qg, kg, vg, kernel, dil, causal, stride=stride)
            go = torch.randn_like(out)

            def fb():
                o = fn(qg, kg, vg, kernel, dil, causal, stride=stride)
                torch.autograd.grad(o, (qg, kg, vg), go)

            fb()
            ms = _bench(fb)
            rate = 3.5 * flops / (ms * 1e-3)
            dense_fb = None
            if cudnn:
                qd, kd, vd = (x.detach().requires_grad_(True) for x in (qh, kh, vh))
                god = torch.randn_like(qh)

                def dfb():
                    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                        o = sdpa(qd, kd, vd)
                    torch.autograd.grad(o, (qd, kd, vd), god)

                try:
                    dfb()
                    dense_fb = _bench(dfb)
                except Exception as e:
                    print(f"  {pid}: cudnn backward unavailable: {e!s:.80}")
            ratio = rate / (3.5 * dense_flops / (dense_fb * 1e-3)) if dense_fb else None
            lines.append(
                rec.add(
                    "fwd+bwd",
                    **row,
                    impl="natten-triton",
                    ms=ms,
                    tflops=rate / 1e12,
                    ratio_vs_cudnn=ratio,
                    cudnn_fwd_bwd_ms=dense_fb,
                )
            )
        _print_problem(pid, [r for r in lines if r["problem"] == pid])
        del q, k, v
        torch.cuda.empty_cache()
    return rec, met


def _attended(spatial, kernel, dil, stride, causal) -> float:
    total = 1.0
    for n, k, d, s, c in zip(spatial, kernel, dil, stride, causal):
        _g, _p, st, en = _axis_windows(n, k, d, s, c, "cpu")
        total *= float((en - st).sum())
    return total


def _print_problem(pid, rows):
    for r in rows:
        ratio = f"{r['ratio_vs_cudnn']:.2f}" if r.get("ratio_vs_cudnn") is not None else "-"
        extra = ""
        if r.get("tile_efficiency") is not None:
            extra = f" tile-eff {r['tile_efficiency']:.2f}  {r['gbps']:.0f} GB/s  first call {r['first_call_s']:.1f}s"
        print(
            f"{pid:10s} {r['kind']:8s} {r['impl']:14s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s  "
            f"x cuDNN {ratio}{extra}",
            flush=True,
        )
