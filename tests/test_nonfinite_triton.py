"""The Triton box forward's experimental non-finite-safe mode (launch_forward.NONFINITE_SAFE, off by
default; its cost on the GPU: benchmarks/probes/probe_nonfinite.py) keeps a NaN in v inside the
windows that hold it, as the reference does; without it the NaN reaches its whole key tile
(docs/gpu.md). Interpreted (tests/interpret.py)."""

from __future__ import annotations

import pytest
import torch

from interpret import run_interpreted


def run_all() -> dict:
    from natten_kernels.triton import launch_forward as lf
    from natten_legacy.reference import na_reference

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 16, 1, 16) for _ in range(3))
    v[:, 10] = float("nan")
    got = {}
    for safe in (False, True):
        lf.NONFINITE_SAFE[0] = safe
        lf.clear_plans()
        out, _ = lf.na_fused_forward(q, k, v, None, None, None, [3], [1], [1], [False], 0.25, [16, 16, 1, 1])
        got[str(safe)] = out[0, :, 0].isnan().any(-1).nonzero().flatten().tolist()
    lf.NONFINITE_SAFE[0] = False
    ref = na_reference(q.double(), k.double(), v.double(), 3, scale=0.25)
    got["reference"] = ref[0, :, 0].isnan().any(-1).nonzero().flatten().tolist()
    return got


def test_nonfinite_safe_mode_isolates_a_nan():
    pytest.importorskip("triton")
    got = run_interpreted("test_nonfinite_triton", timeout=600)
    assert got["reference"] == [9, 10, 11]
    assert got["True"] == got["reference"]
    assert got["False"] == list(range(16))  # the default: the whole 16-key tile sees it
