"""``python -m natten.profiler`` on tiny problems: the table, --json, skipped baselines, bad flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from natten_legacy.reference import neighborhood_slots

from natten.profiler import ProfileProblem, main, neighborhood_mask

TINY = [
    "--shape",
    "12",
    "10",
    "--kernel-size",
    "3",
    "--batch",
    "1",
    "--heads",
    "2",
    "--head-dim",
    "8",
    "--warmup",
    "0",
    "--iters",
    "2",
    "--quiet",
]
LABELS = ("natten (cpu backend)", "dense SDPA + NA mask", "legacy module attention")


def test_table_has_every_row(capsys):
    assert main(TINY) == 0
    out = capsys.readouterr().out
    assert "problem:  2D 12x10, kernel 3x3" in out
    assert f"torch {torch.__version__}" in out and "torch threads" in out
    header = next(line for line in out.splitlines() if line.startswith("implementation"))
    for column in ("fwd ms", "bwd ms", "fwd GFLOP/s", "bwd GFLOP/s", "natten speedup"):
        assert column in header
    rows = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith(LABELS)}
    assert set(rows) == set(LABELS)
    assert all("failed" not in line and "skipped" not in line for line in rows.values())


def test_json_parses_and_outputs_agree(capsys):
    assert main([*TINY, "--json", "--causal", "1", "0", "--dilation", "2", "1", "--stride", "1", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["problem"]["is_causal"] == [True, False]
    assert doc["environment"]["torch"] == torch.__version__
    rows = {r["impl"]: r for r in doc["rows"]}
    assert set(rows) == {"natten", "sdpa", "legacy"}
    for r in rows.values():
        assert r["status"] == "ok", r["note"]
        assert r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["forward_tflops"] > 0
        assert r["forward_flop"] == doc["flop"]["forward"]
    assert rows["sdpa"]["max_abs_diff"] < 1e-4 and rows["legacy"]["max_abs_diff"] < 1e-4


def test_missing_legacy_says_how_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "natten_legacy", None)
    assert main([*TINY, "--impls", "natten,legacy", "--no-backward"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("legacy module attention"))
    assert "skipped: natten-legacy is not installed: pip install natten-legacy" in line


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "natten.profiler", *TINY, "--impls", "natten", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"][0]["status"] == "ok"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shape", "8", "8", "--kernel-size", "9"], "kernel_size * dilation must not exceed"),
        (["--impls", "natten,flash"], "--impls: unknown ['flash']"),
        (["--shape", "8", "--dimension", "2"], "--shape has 1 axes but --dimension is 2"),
        (["--causal", "maybe"], "expected a boolean"),
    ],
)
def test_bad_flags_exit_2_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_useful_flops_follow_design_section_6():
    p = ProfileProblem.create((64, 64), 13, batch=2, heads=4, head_dim=32)
    fwd, bwd = p.useful_flops()
    assert fwd == 4 * 2 * 4 * 64 * 64 * 13 * 13 * 32
    assert 2 * bwd == 5 * fwd


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((11,), dict(kernel_size=4, dilation=2, stride=3, is_causal=True)),
        ((7, 9), dict(kernel_size=(3, 5), dilation=(2, 1), stride=(1, 2), is_causal=(False, True))),
    ],
)
def test_sdpa_mask_matches_the_oracle(shape, kwargs):
    """The SDPA baseline's dense mask, built from natten's qk op, equals the oracle's neighborhoods."""
    p = ProfileProblem.create(shape, **kwargs)
    expected = torch.ones((), dtype=torch.bool)
    rank = len(shape)
    for a, n in enumerate(shape):
        keys, valid = neighborhood_slots(n, p.kernel_size[a], p.dilation[a], p.stride[a], p.is_causal[a])
        axis = torch.zeros(n, n, dtype=torch.bool)
        axis[torch.arange(n)[:, None].expand_as(keys)[valid], keys[valid]] = True
        view = [1] * (2 * rank)
        view[a], view[rank + a] = n, n
        expected = expected & axis.reshape(view)
    assert torch.equal(neighborhood_mask(p), expected.reshape(p.tokens, p.tokens))
