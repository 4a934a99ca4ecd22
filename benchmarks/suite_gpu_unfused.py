"""The unfused GPU suite (issue 3): ``qk -> softmax -> av`` with natten's Triton unfused kernels beside the
fused forward and the legacy module, in the same run. ``python benchmarks/run.py --suite gpu_unfused``.

Per problem: the pipeline's time (tensor-core "gemm" and CUDA-core "exact" variants) and its stages,
the fused forward on the same tensors, natten's Module on its unfused path against the legacy Module
(same weights), and peak memory of the pipeline beyond its inputs, in attention-tensor units, at the
problem's size and at twice its tokens (linear growth means nothing quadratic in tokens).
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import math

import torch

from common import Recorder

# id, spatial, B, H, D, dtype, kernel, dilation
PROBLEMS = [
    ("S5-d1", (56, 56), 128, 4, 32, torch.float16, (7, 7), (1, 1)),
    ("S5-d8", (56, 56), 128, 4, 32, torch.float16, (7, 7), (8, 8)),
    ("S4", (128, 128), 16, 16, 64, torch.float16, (13, 13), (1, 1)),
]
TARGETS = {"unfused / fused": 3.0, "legacy / unfused module": 5.0}  # at most / at least, on S5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gpu_unfused suite")
    g.add_argument("--unfused-only", default="", help="comma-separated problem ids (default: all)")
    g.add_argument("--unfused-sweep", action="store_true", help="also time qk / av over tile configs")


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def _pipeline(F, rank, ks, dil):
    qk = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}[rank]
    av = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}[rank]
    return lambda q, k, v: av(qk(q, k, ks, dil).softmax(-1), v, ks, dil)


def _peak_extra(fn, *args) -> int:
    """Bytes allocated at the peak of ``fn(*args)`` beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


# [variant, block_q, block_k, block_d, num_warps, path, num_stages] candidates for the sweep (gemm
# variant): the band path (3) over rows per program (block_d), warps and pipeline stages (the launcher
# adds its register cap); the best halo-rows (1) and direct (2) configs as anchors
SWEEP = [[1, 64, 64, 64, 4, 1], [1, 64, 32, 32, 4, 2]] + [
    [1, 16, 16, rows, w, 3, st] for rows in (2, 4, 8) for w in (1, 2) for st in (2, 3)
]
LEGACY_MAX_BYTES = 40 * 2**30  # the legacy Module materializes k and v per query


def _sweep(rec, only) -> None:
    from natten_kernels.triton import unfused_ops

    for pid, spatial, B, H, D, dtype, ks, dil in PROBLEMS:
        if only and pid not in only:
            continue
        q, k, v = (torch.randn(B, H, *spatial, D, device="cuda", dtype=dtype) for _ in range(3))
        geo = (list(ks), list(dil), [1] * len(ks), [False] * len(ks))
        w = unfused_ops.na_qk_forward(q, k, None, *geo, [1]).softmax(-1)
        print(f"sweep on {pid}: config -> qk ms / av ms")
        for cfg in SWEEP:
            t_qk = _bench(lambda: unfused_ops.na_qk_forward(q, k, None, *geo, cfg))
            t_av = _bench(lambda: unfused_ops.na_av_forward(w, v, *geo, cfg))
            print(f"  {cfg}: {t_qk:.3f} / {t_av:.3f}", flush=True)
            rec.add("unfused-sweep", problem=pid, config=cfg, qk_ms=t_qk, av_ms=t_av)
        q = k = v = w = None
        torch.cuda.empty_cache()


def run(args) -> tuple[Recorder, bool]:
    import natten
    import natten.functional as F

    rec = Recorder("gpu_unfused", "cuda")
    only = {p for p in args.unfused_only.split(",") if p}
    met = True
    print(
        f"{'problem':8} {'unfused ms':>10} {'exact ms':>9} {'qk/smax/av ms':>18} {'fused ms':>8} {'unf/fused':>9} "
        f"{'module ms':>9} {'legacy ms':>9} {'leg/mod':>8} {'peak/attn':>9} {'x2 tokens':>9}"
    )
    for pid, spatial, B, H, D, dtype, ks, dil in PROBLEMS:
        if only and pid not in only:
            continue
        rank = len(spatial)
        N = math.prod(spatial)
        q, k, v = (torch.randn(B, H, *spatial, D, device="cuda", dtype=dtype) for _ in range(3))
        q = q * D**-0.5
        pipe = _pipeline(F, rank, ks, dil)
        qk = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}[rank]
        av = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}[rank]
        fused = {1: F.na1d, 2: F.na2d, 3: F.na3d}[rank]
        with torch.no_grad():
            t_pipe = _bench(lambda: pipe(q, k, v))
            attn = qk(q, k, ks, dil)
            w = attn.softmax(-1)
            t_qk = _bench(lambda: qk(q, k, ks, dil))
            t_sm = _bench(lambda: attn.softmax(-1))
            t_av = _bench(lambda: av(w, v, ks, dil))
            F.disable_gemm_na()
            t_exact = _bench(lambda: pipe(q, k, v))
            F.enable_gemm_na()
            # the fused forward's time depends on where its tensors land (perf-notes, unfused v1): the
            # fastest of three live copies is the anchor (the strictest one for the ratio)
            copies = [[x.movedim(1, -2).contiguous() for x in (q, k, v)] for _ in range(3)]
            t_fused_all = [_bench(lambda: fused(*c, ks, dil, scale=1.0)) for c in copies]
            t_fused = min(t_fused_all)
            copies = None
            attn_bytes = attn.numel() * attn.element_size()
            attn = w = None
            peak = _peak_extra(pipe, q, k, v)
            big = [torch.randn(B, H, *spatial[:-1], 2 * spatial[-1], D, device="cuda", dtype=dtype) for _ in range(3)]
            peak2 = _peak_extra(pipe, *big)
            big = None
            # Modules: natten on its unfused path vs the legacy Module, same weights
            natten.use_fused_na(False)
            mod = natten.NeighborhoodAttention2D(H * D, H, ks, dil).cuda().to(dtype).eval() if rank == 2 else None
            t_mod = t_leg = float("nan")
            if mod is not None and 4 * B * H * N * math.prod(ks) * D * 2 <= LEGACY_MAX_BYTES:
                leg = natten.LegacyNeighborhoodAttention2D(H * D, H, ks, dil).cuda().to(dtype).eval()
                leg.load_state_dict(mod.state_dict())
                x = torch.randn(B, *spatial, H * D, device="cuda", dtype=dtype)
                t_mod = _bench(lambda: mod(x))
                t_leg = _bench(lambda: leg(x))
                leg = x = None
            natten.use_fused_na(True)
        ratio = t_pipe / t_fused
        speedup = t_leg / t_mod
        if pid == "S5-d1":
            met = met and ratio <= TARGETS["unfused / fused"] and speedup >= TARGETS["legacy / unfused module"]
        stages = f"{t_qk:.3f}/{t_sm:.3f}/{t_av:.3f}"
        print(
            f"{pid:8} {t_pipe:10.3f} {t_exact:9.3f} {stages:>18} {t_fused:8.3f} {ratio:9.2f} "
            f"{t_mod:9.3f} {t_leg:9.3f} {speedup:8.1f} {peak / attn_bytes:9.2f} {peak2 / peak:9.2f}"
        )
        print(f"{'':8} fused ms per copy: {' / '.join(f'{t:.3f}' for t in t_fused_all)}")
        rec.add(
            "unfused",
            problem=pid,
            spatial=list(spatial),
            batch=B,
            heads=H,
            head_dim=D,
            dtype=str(dtype).removeprefix("torch."),
            kernel_size=list(ks),
            dilation=list(dil),
            pipeline_ms=t_pipe,
            pipeline_exact_ms=t_exact,
            qk_ms=t_qk,
            softmax_ms=t_sm,
            av_ms=t_av,
            fused_forward_ms=t_fused,
            fused_forward_ms_per_copy=t_fused_all,
            unfused_over_fused=ratio,
            module_unfused_ms=t_mod,
            legacy_module_ms=t_leg,
            legacy_over_module=speedup,
            attn_bytes=attn_bytes,
            peak_extra_bytes=peak,
            peak_extra_over_attn=peak / attn_bytes,
            peak_extra_2x_tokens_ratio=peak2 / peak,
            tokens=N,
        )
        q = k = v = None
        torch.cuda.empty_cache()
    if args.unfused_sweep:
        _sweep(rec, only)
    print(
        f"targets (S5-d1): unfused/fused <= {TARGETS['unfused / fused']}, legacy/module >= "
        f"{TARGETS['legacy / unfused module']}: {'met' if met else 'NOT met'}"
    )
    return rec, met
