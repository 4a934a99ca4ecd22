"""``python -m natten.profiler``: time natten against dense SDPA and the legacy module on one problem."""

from __future__ import annotations

import argparse
import json

import torch

from natten.profiler import plot
from natten.profiler.implementations import DEFAULT_IMPLEMENTATIONS, IMPLEMENTATIONS
from natten.profiler.problem import DEFAULTS, DTYPES, ProfileProblem, axes
from natten.profiler.report import document, format_report
from natten.profiler.runner import environment, half_precision_note, profile, stderr_progress

_TRUE = {"1", "t", "true", "y", "yes"}
_FALSE = {"0", "f", "false", "n", "no"}


def _bool(text: str) -> bool:
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {text!r}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_timing_arguments(group, warmup: int = 1, max_time: float = 3.0) -> None:
    """--warmup, --iters and --max-time: how :func:`profile` times (benchmarks/run.py takes them too)."""
    group.add_argument("--warmup", type=int, default=warmup, help=f"untimed iterations first (default {warmup})")
    group.add_argument("--iters", type=_positive, default=10, help="timed iterations at most (default 10)")
    group.add_argument(
        "--max-time",
        type=float,
        default=max_time,
        metavar="SECONDS",
        help=f"stop timing an implementation after this much timed work (default {max_time:g}; >= 1 iteration)",
    )


def _per_axis(values: list | None, default):
    """nargs='+' values -> an int/bool (one value) or a tuple (one per axis)."""
    if values is None:
        return default
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m natten.profiler",
        description=(
            "Time natten's fused neighborhood attention (forward and backward) against dense SDPA with the "
            "equivalent mask and the legacy module's attention, on one problem. Default: 2D 64x64, kernel "
            "13x13, batch 2, 4 heads, head_dim 32, float32, CPU."
        ),
        epilog="Per-axis options take one value (all axes) or one per axis, e.g. --kernel-size 7 9.",
    )
    g = p.add_argument_group("problem")
    defaults = "; ".join(f"{r}D {axes(s)} kernel {axes(k)}" for r, (s, k) in DEFAULTS.items())
    g.add_argument(
        "--dimension",
        "-n",
        type=int,
        choices=(1, 2, 3),
        help=f"spatial rank; defaults to len(--shape), else 2 (shapes when --shape is absent: {defaults})",
    )
    g.add_argument("--shape", "-s", type=_positive, nargs="+", metavar="N", help="spatial extent per axis")
    g.add_argument(
        "--kernel-size",
        "-k",
        type=_positive,
        nargs="+",
        metavar="K",
        help="neighborhood size (default: see --dimension)",
    )
    g.add_argument("--dilation", "-d", type=_positive, nargs="+", metavar="D", help="dilation (default 1)")
    g.add_argument("--stride", type=_positive, nargs="+", metavar="S", help="stride (default 1)")
    g.add_argument(
        "--causal",
        type=_bool,
        nargs="*",
        metavar="BOOL",
        help="causal masking; alone: every axis, or one 1/0 per axis (default: off)",
    )
    g.add_argument("--batch", "-b", type=_positive, default=2, help="default 2")
    g.add_argument("--heads", type=_positive, default=4, help="default 4")
    g.add_argument("--head-dim", type=_positive, default=32, help="default 32")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="default float32")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    r = p.add_argument_group("measurement")
    r.add_argument(
        "--impls",
        default=",".join(DEFAULT_IMPLEMENTATIONS),
        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)} (default: {','.join(DEFAULT_IMPLEMENTATIONS)}; "
        "natten-<backend> forces one backend)",
    )
    add_timing_arguments(r)
    r.add_argument("--no-backward", action="store_true", help="time the forward only, under inference_mode")
    r.add_argument("--threads", type=_positive, help="torch.set_num_threads before running")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    o.add_argument(
        "--plot",
        metavar="FILE",
        help="also write a PNG of time and peak memory against --plot-over (needs matplotlib); the problem "
        "above is the largest point",
    )
    o.add_argument("--plot-over", choices=("tokens", "kernel"), default="tokens", help="x axis of --plot")
    o.add_argument("--plot-points", type=_positive, default=4, help="problems in --plot (default 4)")
    return p


def problem_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ProfileProblem:
    rank = args.dimension or (len(args.shape) if args.shape else 2)
    if args.shape and len(args.shape) != rank:
        parser.error(f"--shape has {len(args.shape)} axes but --dimension is {rank}")
    shape, kernel = DEFAULTS[rank]
    causal = args.causal if args.causal is None else (args.causal or [True])
    if args.device != "cpu":
        dev = torch.device(args.device)
        if not getattr(torch, dev.type).is_available():
            parser.error(f"--device {args.device}: no {dev.type} device is available to torch here")
    try:
        return ProfileProblem.create(
            args.shape or shape,
            _per_axis(args.kernel_size, kernel),
            _per_axis(args.dilation, 1),
            _per_axis(args.stride, 1),
            _per_axis(causal, False),
            batch=args.batch,
            heads=args.heads,
            head_dim=args.head_dim,
            dtype=DTYPES[args.dtype],
            device=args.device,
        )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when natten ran (baselines may be skipped or fail), 1 when natten failed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = problem_from_args(args, parser)
    impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    unknown = sorted(set(impls) - set(IMPLEMENTATIONS))
    if unknown or not impls:
        parser.error(f"--impls: unknown {unknown}; choose from {','.join(IMPLEMENTATIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        try:
            plot.require_matplotlib()
        except ImportError as exc:
            parser.error(str(exc))
    progress = None if args.quiet else stderr_progress
    timing = dict(backward=not args.no_backward, warmup=args.warmup, iters=args.iters, max_seconds=args.max_time)
    if progress:
        progress(f"natten.profiler: {problem.describe()}")
    if args.plot:
        results = plot.sweep(problem, impls, args.plot_over, args.plot_points, progress, **timing)
        plot.write_figure(results, args.plot_over, args.plot)
        problem, rows = results[-1]
    else:
        rows = profile(problem, impls, progress=progress, **timing)
    note = half_precision_note(problem, rows, timing["backward"])
    notes = [note] if note else []
    if args.plot:
        notes.append(f"wrote {args.plot}: time and peak memory against {args.plot_over}, {len(results)} points")
    env = environment(problem.device)
    if args.json:
        print(json.dumps(document(problem, rows, env, notes), indent=2))
    else:
        print(format_report(problem, rows, env, notes))
    return int(any(r.impl == "natten" and r.status != "ok" for r in rows))
