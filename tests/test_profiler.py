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


def test_memory_and_spread_columns(capsys):
    assert main([*TINY, "--json", "--iters", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for row in doc["rows"]:
        assert row["forward_min_ms"] <= row["forward_ms"] <= row["forward_max_ms"]
        assert row["backward_min_ms"] <= row["backward_ms"] <= row["backward_max_ms"]
        if sys.platform.startswith("linux"):
            assert row["forward_peak_bytes"] is not None and row["fwd_bwd_peak_bytes"] is not None
            assert row["forward_peak_bytes"] >= 0 and row["fwd_bwd_peak_bytes"] >= 0


def test_peak_bytes_sees_an_allocation():
    """64 MiB allocated and touched inside the call shows as at least that much peak memory."""
    from natten.profiler.memory import peak_bytes

    if not sys.platform.startswith("linux"):
        assert peak_bytes(lambda: torch.ones(2**24), "cpu") is None
        return
    peak = peak_bytes(lambda: torch.ones(2**24), "cpu")  # float32: 64 MiB
    assert 60 * 2**20 <= peak < 200 * 2**20


def test_half_precision_note(monkeypatch):
    """On the CPU a bf16 run slower than float32 gets a note that says why; a faster one none."""
    from natten.profiler import runner
    from natten.profiler.runner import Row, half_precision_note

    problem = ProfileProblem.create((12, 10), 3, dtype=torch.bfloat16)
    half = [Row("natten", "natten", "ok", forward_ms=30.0, backward_ms=60.0)]
    fp32 = Row("natten", "natten", "ok", forward_ms=10.0, backward_ms=20.0)
    monkeypatch.setattr(runner, "profile", lambda p, *a, **k: [fp32] if p.dtype == torch.float32 else half)
    note = half_precision_note(problem, half)
    assert note is not None and "3.0x" in note and "float32" in note and "saves memory, not time" in note
    fp32.forward_ms, fp32.backward_ms = 40.0, 80.0
    assert half_precision_note(problem, half) is None
    assert half_precision_note(ProfileProblem.create((12, 10), 3), half) is None  # float32 run: no note


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the tests session installs it; the figure needs it
    out = tmp_path / "p.png"
    assert main([*TINY, "--shape", "16", "16", "--plot", str(out), "--plot-points", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_without_matplotlib_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--plot", "x.png"])
    assert exc.value.code == 2
    assert "pip install matplotlib" in capsys.readouterr().err


def test_forced_backend_rows(capsys):
    """``natten-<backend>`` runs natten with that backend forced; one that cannot run the problem is a
    skipped row that says why, and the forcing does not outlive the row."""
    import natten

    assert main([*TINY, "--json", "--impls", "natten,natten-cpu,natten-triton"]) == 0
    rows = {r["impl"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["natten-cpu"]["status"] == "ok" and rows["natten-cpu"]["max_abs_diff"] == 0
    if not torch.cuda.is_available():
        assert rows["natten-triton"]["status"] == "skipped"
        assert "runs on cuda, not cpu" in rows["natten-triton"]["note"]
    assert natten.context.preferred_backend() == (None, False)
