"""Every fused CUDA backend other than Triton (whose own suite is test_triton_gpu.py), forced through
``natten.use_backend``, against the float64 reference on the cases its declared capabilities admit,
and on sampled queries of the benchmark-sized problems it can run (exact windows, forward and
backward). Skipped when no such backend is usable here."""

from __future__ import annotations

import pytest
import torch

import natten
from cases import fused_cases, usable_backends
from gpu.naref import check, run_api

OTHERS = [b for b in usable_backends("fused", "cuda") if b.name != "triton"] if torch.cuda.is_available() else []
if not OTHERS:
    pytest.skip("no fused CUDA backend besides triton is usable here", allow_module_level=True)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PARAMS = [pytest.param(b.name, c, id=f"{b.name}-{c.id}") for b in OTHERS for c in fused_cases("cuda", DTYPES, b)]


@pytest.mark.parametrize("backend,case", PARAMS)
def test_matches_reference(backend, case):
    natten.use_backend(backend, force=True)
    check(case, "cuda", run_api)


def _at_scale():
    from gpu.test_at_scale import BENCH, SWEEP

    named = [(f"bench-{pid}", c) for pid, c in BENCH.items()] + [(f"sweep-{c.id}", c) for c in SWEEP]
    return [
        pytest.param(b.name, c, id=f"{b.name}-{name}")
        for b in OTHERS
        for name, c in named
        if b.refusal(c.problem("fused", "cuda")) is None
    ]


@pytest.mark.parametrize("backend,case", _at_scale())
def test_at_scale(backend, case):
    """Sampled queries against the exact windows on the benchmark problems and the window sweep."""
    from sampled_checks import check_case

    natten.use_backend(backend, force=True)
    check_case(case, "cuda", per_case=1, extra=4)


def test_dispatcher_picks_flex_where_only_it_fits():
    """Head dim 20 is no multiple of 8: Triton refuses it, so the default dispatch runs Flex."""
    from cases import Case
    from natten.functional.dispatch import select_backend

    case = Case((32, 40), (7, 9), (1, 2), (1, 1), (False, True), head_dim=20, head_dim_v=20, dtype=torch.float16)
    assert select_backend(case.problem("fused", "cuda")).name == "flex"
    check(case, "cuda", run_api)
