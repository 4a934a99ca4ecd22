"""benchmarks/plot.py draws the docs' figures from benchmark JSON rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

PNG = b"\x89PNG\r\n\x1a\n"


def test_gpu_figure_from_the_committed_rows(tmp_path):
    pytest.importorskip("matplotlib")  # the tests session installs it
    import plot

    rows = sorted((REPO / "docs" / "data").glob("gpu-suite-*.json"))
    assert rows, "docs/data holds the GPU suite rows behind docs/img/gpu-suite.png"
    assert plot.main([*map(str, rows), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "gpu-suite.png").read_bytes()[:8] == PNG
    merged = plot.load(rows)["gpu"]
    assert {r["problem"] for r in merged} >= {"S1", "S3", "S6"}


def test_cpu_figure_from_suite_rows(tmp_path):
    pytest.importorskip("matplotlib")
    import plot

    problem = {"shape": [64, 64]}
    rows = [
        {
            "kind": "attention",
            "status": "ok",
            "label": "natten",
            "impl": "natten",
            "problem": problem,
            "forward_ms": 12.0,
            "backward_ms": 25.0,
        },
        {
            "kind": "attention",
            "status": "ok",
            "label": "sdpa",
            "impl": "sdpa",
            "problem": problem,
            "forward_ms": 170.0,
            "backward_ms": 400.0,
        },
        {"kind": "memory", "impl": "natten", "problem": "64x64", "peak_bytes": 30 * 2**20},
    ]
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"suite": "cpu", "created": "x", "rows": rows}))
    assert plot.main([str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "cpu-suite.png").read_bytes()[:8] == PNG
