"""Shared by every suite: the JSON row format, provenance (versions, git sha) and anchors."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from natten.profiler import environment, synchronize

REPO = Path(__file__).resolve().parent.parent


def git_sha() -> str | None:
    """The checkout's commit, with ``-dirty`` when the working tree differs from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class Recorder:
    """Collects self-contained rows: each carries the suite, device, versions and git sha."""

    def __init__(self, suite: str, device: str):
        self.suite = suite
        self.provenance = {"suite": suite, "git_sha": git_sha(), **environment(device)}
        self.rows: list[dict] = []

    def add(self, kind: str, **fields) -> dict:
        row = {"kind": kind, **fields, **self.provenance}
        self.rows.append(row)
        return row

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = out_dir / f"{self.suite}-{stamp}.json"
        path.write_text(json.dumps({"suite": self.suite, "created": stamp, "rows": self.rows}, indent=2) + "\n")
        return path


def matmul_rate(device: str, dtype: torch.dtype, n: int = 2048, iters: int = 10) -> tuple[float, float]:
    """``(median ms, FLOP/s)`` of an ``n x n`` ``torch.mm``: the machine's dense-math anchor."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    return ms, 2 * n**3 / (ms * 1e-3)


def compiled_stats(fns, wanted=()) -> None:
    """Print registers, spills and shared memory of every compiled variant of Triton kernels ``fns``,
    with the constexprs named in ``wanted`` (Triton-version specific cache layout: best effort)."""
    for fn in fns:
        for cache in getattr(fn, "device_caches", {}).values():
            kernels = cache[0] if isinstance(cache, tuple) else cache
            for k in kernels.values():
                try:
                    names = k.src.fn.arg_names
                    consts = {names[i[0] if isinstance(i, tuple) else i]: v for i, v in k.src.constants.items()}
                    tiles = " ".join(f"{n}={consts[n]}" for n in wanted if n in consts)
                except Exception as e:
                    tiles = f"? ({type(e).__name__})"
                md = k.metadata
                print(
                    f"  {fn.__name__}: warps {md.num_warps} stages {md.num_stages} regs {k.n_regs} "
                    f"spills {k.n_spills} smem {md.shared}  {tiles}"
                )
