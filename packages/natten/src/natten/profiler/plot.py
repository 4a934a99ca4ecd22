"""``python -m natten.profiler --plot FILE``: time and peak memory against tokens or kernel size.

The problem the command line describes is the largest point; smaller ones scale every spatial axis
(``--plot-over tokens``) or every kernel axis (``--plot-over kernel``) down from it. Each point is one
profiler run of the chosen implementations, so the figure shows the same medians and peaks the
table does. matplotlib is an optional dependency (``pip install matplotlib``, or ``natten[plot]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from natten.profiler.problem import ProfileProblem
from natten.profiler.runner import Progress, Row, profile

MATPLOTLIB_HINT = "--plot needs matplotlib: pip install matplotlib (or natten[plot])"


def require_matplotlib():
    """The pyplot module with a file-only backend, or ImportError with the install hint."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(MATPLOTLIB_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scaled_problems(problem: ProfileProblem, over: str, points: int) -> list[ProfileProblem]:
    """``points`` problems growing to ``problem`` (fractions ``1/points .. 1`` of each axis)."""
    if over not in ("tokens", "kernel"):
        raise ValueError(f"--plot-over must be 'tokens' or 'kernel', got {over!r}")
    out = []
    for i in range(1, points + 1):
        f = i / points
        if over == "tokens":
            reach = [k * d for k, d in zip(problem.kernel_size, problem.dilation)]
            shape = tuple(max(r, round(n * f)) for n, r in zip(problem.shape, reach))
            cand = replace(problem, shape=shape)
        else:
            kernel = tuple(max(2, round(k * f)) for k in problem.kernel_size)
            stride = tuple(min(s, k) for s, k in zip(problem.stride, kernel))
            cand = replace(problem, kernel_size=kernel, stride=stride)
        if not out or out[-1] != cand:
            out.append(cand)
    return out


def x_value(problem: ProfileProblem, over: str) -> int:
    if over == "tokens":
        return problem.tokens
    n = 1
    for k in problem.kernel_size:
        n *= k
    return n


def sweep(
    problem: ProfileProblem, impls: Sequence[str], over: str, points: int, progress: Progress | None, **timing
) -> list[tuple[ProfileProblem, list[Row]]]:
    results = []
    for i, p in enumerate(scaled_problems(problem, over, points), 1):
        if progress:
            progress(f"--plot point {i}/{points}: {p.describe()}")
        results.append((p, profile(p, impls, progress=progress, **timing)))
    return results


def write_figure(results: list[tuple[ProfileProblem, list[Row]]], over: str, path: str) -> None:
    """Two panels, log-log: fwd+bwd (or forward) median time, and peak memory, per implementation."""
    plt = require_matplotlib()
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {r.impl: r.label for _p, rows in results for r in rows}
    for impl, label in labels.items():
        pts = [(x_value(p, over), r) for p, rows in results for r in rows if r.impl == impl and r.status == "ok"]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ax_t.plot(xs, [r.total_ms for _, r in pts], marker="o", label=label)
        mem = [(x, r.fwd_bwd_peak_bytes or r.forward_peak_bytes) for x, r in pts]
        mem = [(x, m / 2**20) for x, m in mem if m]
        if mem:
            ax_m.plot([x for x, _ in mem], [m for _, m in mem], marker="o", label=label)
    last = results[-1][0]
    xlabel = "tokens" if over == "tokens" else "keys per query (prod(kernel_size))"
    backward = any(r.backward_ms is not None for _p, rows in results for r in rows)
    for ax, ylabel in ((ax_t, "median fwd+bwd ms" if backward else "median forward ms"), (ax_m, "peak MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"natten.profiler: {last.describe()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
