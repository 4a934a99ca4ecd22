"""Plain-text tables and the JSON document of a profiler run."""

from __future__ import annotations

from collections.abc import Sequence

from natten.profiler.problem import ProfileProblem
from natten.profiler.runner import Row


def rate_unit(device: str) -> tuple[str, float]:
    """GFLOP/s on CPU, TFLOP/s on accelerators: (label, divisor)."""
    return ("GFLOP/s", 1e9) if device == "cpu" else ("TFLOP/s", 1e12)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others; rows of one cell span the table."""
    cells = [list(headers), *[list(r) for r in rows if len(r) == len(headers)]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        if len(r) != len(headers):
            return "  ".join(r)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def speedup_of(reference: Row | None, row: Row) -> float | None:
    """How many times less time ``reference`` takes than ``row`` (forward + backward)."""
    if reference is None or reference.total_ms is None or row.total_ms is None:
        return None
    return row.total_ms / reference.total_ms


def _spread(median: float | None, low: float | None, high: float | None) -> str:
    """``median (min-max)`` in ms."""
    if median is None:
        return "-"
    return f"{median:.2f} ({low:.2f}-{high:.2f})" if low is not None and high is not None else f"{median:.2f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def format_rows(rows: Sequence[Row], device: str) -> str:
    unit, div = rate_unit(device)
    natten = next((r for r in rows if r.impl == "natten" and r.status == "ok"), None)
    lines = []
    for r in rows:
        if r.status != "ok":
            lines.append([r.label, f"{r.status}: {r.note}"])
            continue
        fwd_rate, bwd_rate = r.rate("forward"), r.rate("backward")
        speedup = speedup_of(natten, r)
        lines.append(
            [
                r.label,
                _spread(r.forward_ms, r.forward_min_ms, r.forward_max_ms),
                _spread(r.backward_ms, r.backward_min_ms, r.backward_max_ms),
                _fmt(fwd_rate and fwd_rate / div, ".2f"),
                _fmt(bwd_rate and bwd_rate / div, ".2f"),
                str(r.forward_samples),
                f"{_mib(r.forward_peak_bytes)} / {_mib(r.fwd_bwd_peak_bytes)}",
                _fmt(speedup, ".3g") + ("x" if speedup is not None else ""),
                _fmt(r.max_abs_diff, ".1e"),
            ]
        )
    headers = [
        "implementation",
        "fwd ms (min-max)",
        "bwd ms (min-max)",
        f"fwd {unit}",
        f"bwd {unit}",
        "n",
        "peak MiB fwd / fwd+bwd",
        "natten speedup",
        "max |out - natten|",
    ]
    return table(headers, lines)


def format_report(problem: ProfileProblem, rows: Sequence[Row], env: dict, notes: Sequence[str] = ()) -> str:
    fwd, bwd = problem.useful_flops()
    legacy = f", natten-legacy {env['natten_legacy']}" if env.get("natten_legacy") else ""
    return "\n".join(
        [
            f"problem:  {problem.describe()}",
            f"FLOPs:    forward {fwd / 1e9:.3f} GFLOP, backward {bwd / 1e9:.3f} GFLOP "
            "(useful work only: 2 x multiply-adds of attended pairs; docs/flops.md)",
            f"software: torch {env['torch']}, natten {env['natten']}, natten-kernels {env['natten_kernels']}{legacy}, "
            f"Python {env['python']}",
            f"machine:  {env['device_name']}, {env['threads']} torch threads",
            "",
            format_rows(rows, problem.device),
            "",
            "Times are medians after warm-up (min-max of the n timed iterations); backward excludes its forward. "
            "Peak memory: one call's high-water mark over its inputs (CPU: resident set; CUDA: allocator). "
            "'natten speedup' = this row's fwd+bwd time / natten's.",
            *(f"note: {n}" for n in notes),
        ]
    )


def document(problem: ProfileProblem, rows: Sequence[Row], env: dict, notes: Sequence[str] = ()) -> dict:
    """The machine-readable form of a run (``--json``)."""
    natten = next((r for r in rows if r.impl == "natten" and r.status == "ok"), None)
    fwd, bwd = problem.useful_flops()
    return {
        "problem": problem.as_dict(),
        "flop": {"forward": fwd, "backward": bwd},
        "environment": env,
        "rows": [{**r.as_dict(), "natten_speedup": speedup_of(natten, r)} for r in rows],
        "notes": list(notes),
    }
