"""Figures from benchmark JSON rows (``benchmarks/run.py`` output): never drawn by hand.

    python benchmarks/plot.py ROWS.json [ROWS.json ...] --out docs/img

* GPU suite rows -> ``gpu-suite.png``: per problem, the forward and forward+backward throughput of
  natten as a ratio to cuDNN dense SDPA measured in the same run, with the other anchors of that run
  beside it (flash SDPA, FlexAttention with the neighborhood mask where it ran) and the targets.
  Rows of several files are merged (later files add problems or anchors; a row repeated replaces
  the earlier one).
* CPU suite rows -> ``cpu-suite.png``: fwd+bwd median time and peak memory per implementation.

Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(paths: list[Path]) -> dict[str, list[dict]]:
    """Rows by suite; a (kind, problem, impl) repeated in a later file replaces the earlier row."""
    by_suite: dict[str, dict[tuple, dict]] = {}
    for path in paths:
        doc = json.loads(path.read_text())
        for row in doc["rows"]:
            key = (row.get("kind"), str(row.get("problem")), row.get("impl"), str(row.get("label")))
            by_suite.setdefault(doc["suite"], {})[key] = row
    return {suite: list(rows.values()) for suite, rows in by_suite.items()}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


GPU_SERIES = [  # (kind, impl, label)
    ("forward", "natten-triton", "natten forward"),
    ("fwd+bwd", "natten-triton", "natten forward+backward"),
    ("forward", "flex-na", "FlexAttention + NA block mask, forward"),
    ("forward", "sdpa-flash", "dense flash SDPA, forward"),
]


def gpu_figure(rows: list[dict], out: Path) -> Path:
    plt = _pyplot()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from suite_gpu import FWD_BWD_TARGETS, TARGETS

    problems = list(dict.fromkeys(r["problem"] for r in rows if r.get("ratio_vs_cudnn") is not None))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(problems) + 3), 4.5))
    width = 0.8 / len(GPU_SERIES)
    for i, (kind, impl, label) in enumerate(GPU_SERIES):
        vals = {r["problem"]: r["ratio_vs_cudnn"] for r in rows if r["kind"] == kind and r.get("impl") == impl}
        xs = [j + (i - (len(GPU_SERIES) - 1) / 2) * width for j, p in enumerate(problems) if p in vals]
        if xs:
            ax.bar(xs, [vals[p] for p in problems if p in vals], width, label=label)
    for j, p in enumerate(problems):
        for target, dx in ((TARGETS.get(p), -1.5 * width), (FWD_BWD_TARGETS.get(p), -0.5 * width)):
            if target:
                ax.plot([j + dx - width / 2, j + dx + width / 2], [target, target], color="black", lw=2)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(problems)), problems, rotation=30)
    ax.set_ylabel("useful TFLOP/s / cuDNN dense TFLOP/s (same run)")
    sha = {(r.get("git_sha") or "?")[:7] + ("-dirty" if str(r.get("git_sha")).endswith("-dirty") else "") for r in rows}
    gpu = {r.get("device_name", "?") for r in rows}
    ax.set_title(
        f"GPU suite on {', '.join(sorted(gpu))} (rows of {', '.join(sorted(sha))}); black: targets", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, out / "gpu-suite.png")


def _short(row: dict) -> str:
    """``impl`` and the problem's shape: a bar's label."""
    prob = row.get("problem")
    shape = "x".join(map(str, prob["shape"])) if isinstance(prob, dict) else str(prob)
    return f"{row.get('impl', '?')}\n{shape}"


def cpu_figure(rows: list[dict], out: Path) -> Path:
    plt = _pyplot()
    att = [r for r in rows if r["kind"] == "attention" and r.get("status") == "ok"]
    mem = [r for r in rows if r["kind"] == "memory" and r.get("peak_bytes")]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_t.bar(range(len(att)), [r["forward_ms"] + (r["backward_ms"] or 0) for r in att])
    ax_t.set_xticks(range(len(att)), [_short(r) for r in att], fontsize=8)
    ax_t.set_ylabel("median fwd+bwd ms")
    ax_m.bar(range(len(mem)), [r["peak_bytes"] / 2**20 for r in mem])
    ax_m.set_xticks(range(len(mem)), [_short(r) for r in mem], fontsize=8)
    ax_m.set_ylabel("peak MiB, one fwd+bwd")
    name = {r.get("device_name", "?") for r in rows}
    fig.suptitle(f"CPU suite on {', '.join(sorted(name))}, {rows[0].get('threads', '?')} threads", fontsize=9)
    for ax in (ax_t, ax_m):
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, out / "cpu-suite.png")


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/plot.py", description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path, nargs="+", help="JSON files written by benchmarks/run.py")
    ap.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (default: here)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {"gpu": gpu_figure, "cpu": cpu_figure}
    for suite, rows in load(args.rows).items():
        if suite in figures:
            print(f"{suite}: {len(rows)} rows -> {figures[suite](rows, args.out)}")
        else:
            print(f"{suite}: no figure for this suite ({len(rows)} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
