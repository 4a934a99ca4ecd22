"""The unfused Triton kernels (both variants) under ``TRITON_INTERPRET=1`` on CPU tensors (CI has no GPU).

The launchers are called directly (the ops are registered for CUDA only), float32 and float16, with
outputs poisoned (deterministic mode fills ``torch.empty`` with NaN) so an unwritten element fails.
Small tiles make the problems span several tiles, with partial tiles at both borders of every axis;
every path of the launcher is covered: the direct slot grid, the band kernels (segments against key
rows on tensor cores, one or several key spans), and the halo kernels moving weights as coalesced rows
(``tl.gather``) or per pair.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

if torch.cuda.is_available():
    pytest.skip("CUDA present: run tests/gpu instead", allow_module_level=True)
pytest.importorskip("triton")

from cases import Case
from interpret import run_checks
from unfused_checks import check_ops

F32, F16 = torch.float32, torch.float16
EXACT, GEMM = 0, 1
PAIRS, ROWS, DIRECT, BAND = 0, 1, 2, 3  # the launcher's paths: halo per pair, halo rows, direct, band
SMALL = [16, 16, 16, 4]  # block_q, block_k, block_d, num_warps

# (name, case, config); the halo paths are forced where the default would pick the direct one
RUNS = [
    ("1d-gemm-default", Case((9,), (3,), (1,), (1,), (False,), batch=1, head_dim=16, dtype=F32), [GEMM]),
    (
        "1d-causal-dil-gemm-rows",
        Case((19,), (4,), (2,), (1,), (True,), batch=1, head_dim=24, dtype=F32),
        [GEMM, *SMALL, ROWS],
    ),
    ("1d-rpb-stride-exact", Case((21,), (5,), (1,), (3,), (False,), batch=1, rpb=True, dtype=F32), [EXACT]),
    (
        "2d-rpb-dil-gemm-f16-rows",
        Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False), rpb=True, head_dim=16, dtype=F16),
        [GEMM, *SMALL, ROWS],
    ),
    (
        "2d-rpb-dil-direct-f16",
        Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False), rpb=True, head_dim=12, dtype=F16),
        [GEMM, 16, 16, 8, 4, DIRECT],
    ),
    (
        "2d-causal-stride-exact-f16",
        Case((7, 9), (4, 3), (1, 2), (2, 3), (True, False), batch=1, dtype=F16),
        [EXACT, 16, 16, 4, 2],
    ),
    (
        "3d-causal-gemm-rows",
        Case((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, *SMALL, ROWS],
    ),
    (
        "3d-causal-direct",
        Case((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, 16, 4, 8, 4, DIRECT],
    ),
    (
        "2d-rpb-dil-band-f16",
        Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False), rpb=True, head_dim=12, dtype=F16),
        [GEMM, 16, 16, 2, 4, BAND],
    ),
    (
        "3d-causal-stride-band",
        Case((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, 16, 16, 4, 2, BAND],
    ),
    # a segment's windows reach 138 keys: two key spans of 128
    (
        "1d-long-stride-band-spans",
        Case((150,), (120,), (1,), (4,), (False,), batch=1, head_dim=16, dtype=F32),
        [GEMM, 16, 16, 1, 4, BAND],
    ),
    # 121 slots x 128 queries: the per-pair path, with causal slots filled separately
    (
        "2d-large-kernel-pairs-gemm",
        Case((12, 12), (11, 11), (1, 1), (1, 1), (False, True), batch=1, head_dim=16, dtype=F32),
        [GEMM, 128, 64, 16, 4, PAIRS],
    ),
    (
        "2d-large-kernel-rpb-pairs-exact",
        Case((13, 12), (9, 7), (1, 1), (1, 1), (False, False), batch=1, rpb=True, dtype=F32),
        [EXACT, 256, 16, 16, 4, PAIRS],
    ),
]


def run_all() -> dict:
    from natten_kernels.triton import unfused_ops

    return run_checks((name, partial(check_ops, case, unfused_ops, config)) for name, case, config in RUNS)


@pytest.mark.parametrize("name", [r[0] for r in RUNS])
def test_unfused_triton_interpreted_matches_reference(name, interpreted):
    assert interpreted[name] is None, interpreted[name]


def test_path_choice():
    from natten_kernels.triton.unfused_ops import _path, geometry, parse_config

    x = torch.empty(1, 1, 40, 40, 16)
    small = geometry(x, (7, 7), (1, 1), (1, 1), (False, False))
    assert _path(small, parse_config([GEMM], F16, 16), 16) == BAND
    assert _path(small, parse_config([EXACT], F16, 16), 16) == DIRECT
    assert _path(small, parse_config([GEMM, *SMALL, ROWS], F16, 16), 16) == ROWS
    dilated = geometry(torch.empty(1, 1, 56, 56, 16), (7, 7), (8, 8), (1, 1), (False, False))
    assert dilated.dense  # 7-token groups under 7x7 windows: the halo is all useful
    assert _path(dilated, parse_config([GEMM], F16, 16), 16) == ROWS
    large = geometry(torch.empty(1, 1, 80, 80, 16), (33, 33), (1, 1), (1, 1), (False, False))
    assert _path(large, parse_config([GEMM], F16, 16), 16) == BAND  # a segment reaches 48 keys of a row
    wide = geometry(torch.empty(1, 1, 40, 130, 16), (33, 121), (1, 1), (1, 1), (False, False))
    # 136 keys per segment: the halo, per pair (3993 slots x 64 queries do not fit in registers)
    assert _path(wide, parse_config([GEMM], F16, 16), 16) == PAIRS
    assert _path(large, parse_config([EXACT], F16, 16), 16) == DIRECT  # exact: CUDA cores either way


@pytest.mark.parametrize(
    "config, dtype, match",
    [
        ([2], torch.float32, "variant"),
        ([GEMM], torch.float64, "no float64"),
        ([GEMM, 24, 16, 16, 4], torch.float32, "power of two"),
        ([EXACT, 16, 16], torch.float32, "must be"),
        ([GEMM, 16, 16, 8, 4, ROWS], torch.float32, "block_d must be a power of two >= 16"),
        ([GEMM, 16, 16, 16, 4, 4], torch.float32, "path"),
        ([EXACT, 16, 16, 1, 4, BAND], torch.float32, "tensor cores"),
        ([GEMM, 8, 16, 1, 4, BAND], torch.float32, "block_q must be a power of two >= 16"),
    ],
)
def test_bad_config_is_a_value_error(config, dtype, match):
    from natten_kernels.triton.unfused_ops import parse_config

    with pytest.raises(ValueError, match=match):
        parse_config(config, dtype, 16)
