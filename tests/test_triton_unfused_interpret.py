"""The unfused Triton kernels (both variants) under ``TRITON_INTERPRET=1`` on CPU tensors (CI has no GPU).

The launchers are called directly (the ops are registered for CUDA only), float32 and float16, with
outputs poisoned (deterministic mode fills ``torch.empty`` with NaN) so an unwritten element fails.
Small tiles make the problems span several tiles, with partial tiles at both borders of every axis;
both ways of moving weights (coalesced rows + ``tl.gather``, and per-pair addressing) are covered.
"""

from __future__ import annotations

import traceback

import pytest
import torch

if torch.cuda.is_available():
    pytest.skip("CUDA present: run tests/gpu instead", allow_module_level=True)
pytest.importorskip("triton")

from cases import Case
from interpret import run_interpreted
from unfused_checks import check_ops

F32, F16 = torch.float32, torch.float16
EXACT, GEMM = 0, 1
SMALL = [16, 16, 16, 4]  # block_q, block_k, block_d, num_warps

# (name, case, config)
RUNS = [
    ("1d-gemm-default", Case((9,), (3,), (1,), (1,), (False,), batch=1, head_dim=16, dtype=F32), [GEMM]),
    ("1d-causal-dil-gemm", Case((19,), (4,), (2,), (1,), (True,), batch=1, head_dim=24, dtype=F32), [GEMM, *SMALL]),
    ("1d-rpb-stride-exact", Case((21,), (5,), (1,), (3,), (False,), batch=1, rpb=True, dtype=F32), [EXACT]),
    (
        "2d-rpb-dil-gemm-f16",
        Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False), rpb=True, head_dim=16, dtype=F16),
        [GEMM, *SMALL],
    ),
    (
        "2d-causal-stride-exact-f16",
        Case((7, 9), (4, 3), (1, 2), (2, 3), (True, False), batch=1, dtype=F16),
        [EXACT, 16, 16, 16, 2],
    ),
    (
        "3d-causal-gemm",
        Case((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, *SMALL],
    ),
    # 121 slots x 128 queries: the per-pair (scatter) path, with causal slots filled separately
    (
        "2d-large-kernel-scatter-gemm",
        Case((12, 12), (11, 11), (1, 1), (1, 1), (False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, 128, 64, 16, 4],
    ),
    (
        "2d-large-kernel-rpb-scatter-exact",
        Case((13, 12), (9, 7), (1, 1), (1, 1), (False, False), batch=1, rpb=True, dtype=F32),
        [EXACT, 256, 16, 16, 4],
    ),
]


def run_all() -> dict:
    import torch.utils.deterministic
    from natten_kernels.triton import unfused_ops

    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    results = {}
    for name, case, config in RUNS:
        try:
            check_ops(case, unfused_ops, config)
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
    return results


@pytest.fixture(scope="module")
def interpreted():
    return run_interpreted("test_triton_unfused_interpret")


@pytest.mark.parametrize("name", [r[0] for r in RUNS])
def test_unfused_triton_interpreted_matches_reference(name, interpreted):
    assert interpreted[name] is None, interpreted[name]


def test_paths_are_both_exercised():
    from natten_kernels.triton.unfused_ops import _gather, geometry, parse_config

    x = torch.empty(1, 1, 12, 12, 16)
    g = geometry(x, (11, 11), (1, 1), (1, 1), (False, True))
    assert not _gather(g, parse_config(RUNS[6][2], torch.float32, 16))
    g = geometry(x, (3, 3), (1, 1), (1, 1), (False, False))
    assert _gather(g, parse_config([GEMM], torch.float32, 16))


@pytest.mark.parametrize(
    "config, dtype, match",
    [
        ([2], torch.float32, "variant"),
        ([GEMM], torch.float64, "no float64"),
        ([GEMM, 24, 16, 16, 4], torch.float32, "power of two"),
        ([EXACT, 16, 16], torch.float32, "must be"),
    ],
)
def test_bad_config_is_a_value_error(config, dtype, match):
    from natten_kernels.triton.unfused_ops import parse_config

    with pytest.raises(ValueError, match=match):
        parse_config(config, dtype, 16)
