"""The CPU suite: natten vs dense SDPA vs the legacy module, memory scaling, and the torch.mm anchor.

Problem (fixed, so runs compare): fused forward + backward, 2D 64x64, kernel 13x13, batch 2, 4 heads,
head_dim 32, float32. Targets: natten >= 10x faster than dense SDPA with the equivalent mask and
>= 5x faster than the legacy module (fwd + bwd time); peak memory growing ~linearly with tokens.
"""

from __future__ import annotations

import argparse

import torch

from common import Recorder, matmul_rate
from memory_probe import METHOD, peak_memory
from natten.profiler import ProfileProblem, document, format_rows, profile, table

TARGETS = {"sdpa": 10.0, "legacy": 5.0}  # natten's fwd+bwd speedup over each baseline
BASE = dict(kernel_size=13, batch=2, heads=4, head_dim=32, dtype=torch.float32, device="cpu")
SMALL, LARGE = (64, 64), (128, 128)


def _spec(problem: ProfileProblem) -> dict:
    """ProfileProblem.create keywords, JSON-ready (for the memory subprocess)."""
    d = problem.as_dict()
    keys = ("shape", "kernel_size", "dilation", "stride", "is_causal", "batch", "heads", "head_dim", "dtype", "device")
    return {k: d[k] for k in keys}


def _attention(rec: Recorder, problem: ProfileProblem, impls, args) -> dict:
    rows = profile(problem, impls, warmup=args.warmup, iters=args.iters, max_seconds=args.max_time)
    for row in document(problem, rows, {})["rows"]:
        rec.add("attention", problem=problem.as_dict(), **row)
    print(f"\n{problem.describe()}\n{format_rows(rows, problem.device)}")
    return {r.impl: r for r in rows}


def _speedups(rec: Recorder, rows: dict) -> bool:
    natten, met = rows.get("natten"), True
    for impl, target in TARGETS.items():
        base = rows.get(impl)
        if natten is None or natten.total_ms is None or base is None or base.total_ms is None:
            why = "; ".join(r.note for r in (natten, base) if r is not None and r.note) or "not run"
            print(f"speedup vs {impl}: not measured ({why})")
            met = False
            continue
        ratio = base.total_ms / natten.total_ms
        ok = ratio >= target
        met &= ok
        rec.add("speedup", impl="natten", baseline=impl, ratio=ratio, target=target, met=ok)
        print(
            f"speedup of natten over {base.label} (fwd+bwd): {ratio:.1f}x (target >= {target:g}x: "
            f"{'met' if ok else 'NOT met'})"
        )
    return met


def _memory(rec: Recorder, small: ProfileProblem, large: ProfileProblem, with_baselines: bool) -> bool:
    cases = [("natten", small), ("natten", large)]
    if with_baselines:
        cases += [("sdpa", small), ("legacy", small)]
    lines, peaks = [], {}
    for impl, problem in cases:
        res = peak_memory(impl, _spec(problem))
        peaks[(impl, problem.shape)] = res["peak_bytes"]
        rec.add("memory", impl=impl, problem=problem.as_dict(), **res)
        size = "x".join(map(str, problem.shape))
        peak = "-" if res["peak_bytes"] is None else f"{res['peak_bytes'] / 2**20:.1f}"
        lines.append([impl, size, f"{problem.tokens}", peak, res.get("note", "")])
    print(f"\npeak memory of one forward + backward ({METHOD})")
    print(table(["impl", "shape", "tokens", "peak MiB", "note"], lines))
    a, b = peaks[("natten", small.shape)], peaks[("natten", large.shape)]
    if not a or not b:
        print("natten memory scaling: not measured")
        return False
    tokens = large.tokens / small.tokens
    ratio = b / a
    linear = ratio <= 1.25 * tokens  # ~linear: within 25% of the token ratio (quadratic would be 16x)
    rec.add("memory_scaling", impl="natten", ratio=ratio, token_ratio=tokens, linear=linear)
    print(
        f"natten peak memory ratio {ratio:.2f}x for {tokens:g}x tokens "
        f"({'~linear' if linear else 'NOT linear'}; quadratic would be {tokens**2:g}x)"
    )
    return linear


def _anchor(rec: Recorder, natten_row, problem: ProfileProblem) -> None:
    ms, rate = matmul_rate(problem.device, problem.dtype)
    rec.add("anchor", impl="torch.mm", shape=[2048, 2048, 2048], dtype=problem.dtype_name, ms=ms, tflops=rate / 1e12)
    print(f"\nanchor: torch.mm 2048x2048x2048 {problem.dtype_name}: {rate / 1e9:.1f} GFLOP/s ({ms:.2f} ms)")
    if natten_row is not None and natten_row.status == "ok":
        for what in ("forward", "backward"):
            r = natten_row.rate(what)
            if r:
                print(f"natten effective {what}: {r / 1e9:.1f} GFLOP/s = {r / rate:.2f} of torch.mm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-baselines", action="store_true", help="natten only (skip SDPA and legacy timings and their memory probes)"
    )


def run(args: argparse.Namespace) -> tuple[Recorder, bool]:
    """Returns the recorded rows and whether every target was met."""
    rec = Recorder("cpu", "cpu")
    p = rec.provenance
    print(
        f"natten CPU suite: torch {p['torch']}, natten {p['natten']}, natten-kernels {p['natten_kernels']}, "
        f"{p['device_name']}, {p['threads']} threads, git {p['git_sha']}"
    )
    small = ProfileProblem.create(SMALL, **BASE)
    large = ProfileProblem.create(LARGE, **BASE)
    impls = ["natten"] if args.no_baselines else ["natten", "sdpa", "legacy"]
    rows = _attention(rec, small, impls, args)
    met = args.no_baselines or _speedups(rec, rows)
    large_rows = _attention(rec, large, ["natten"], args)
    if rows["natten"].total_ms and large_rows["natten"].total_ms:
        ratio = large_rows["natten"].total_ms / rows["natten"].total_ms
        rec.add("time_scaling", impl="natten", ratio=ratio, token_ratio=large.tokens / small.tokens)
        print(f"natten fwd+bwd time ratio {ratio:.2f}x for {large.tokens / small.tokens:g}x tokens")
    met &= _memory(rec, small, large, not args.no_baselines)
    _anchor(rec, rows.get("natten"), small)
    return rec, met
