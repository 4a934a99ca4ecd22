"""The CPU backend at sizes beyond the dense reference's reach: sampled queries against the exact
windows (tests/sampled_checks.py), forward and backward, in float32 and the half types."""

from __future__ import annotations

import pytest
import torch

from cases import large_case
from sampled_checks import check_case

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
CASES = [
    large_case((4096,), (1023,), kv_heads=1, head_dim=32, dtype=F32),
    large_case((3000,), (257,), (3,), (16,), (True,), head_dim=64, dtype=BF16),
    large_case((64, 72), (31, 33), rpb=True, head_dim=32, dtype=F32),
    large_case((60, 64), (17, 24), (2, 1), (4, 8), (False, True), additional=5, head_dim=16, head_dim_v=24, dtype=F16),
    large_case((12, 18, 20), (5, 9, 11), (1, 2, 1), (1, 1, 2), (True, False, False), heads=4, head_dim=16, dtype=F32),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cpu_at_scale(case):
    check_case(case, "cpu")


def test_resident_tma_guard():
    """Triton 3.6 miscompiles multi-axis resident TMA boxes against streamed tiles as tall as the padded
    head dim (perf notes v7); 1D boxes and other streamed heights keep TMA."""
    pytest.importorskip("triton")
    from natten_kernels.triton.tma import resident_tiles_ok

    assert not resident_tiles_ok((1, 8, 16), 128, 128, 128)  # S3's 128x128 forward
    assert not resident_tiles_ok((2, 8, 8), 128, 128, 128)  # S6's
    assert not resident_tiles_ok((1, 8, 8), 64, 64, 64)
    assert not resident_tiles_ok((1, 8, 8), 128, 64, 128)  # the value head dim counts too
    assert not resident_tiles_ok((4, 4, 4), 32, 24, 24)  # padded to 32
    assert resident_tiles_ok((1, 1, 128), 128, 128, 128)  # 1D: S1's forward keeps TMA
    assert resident_tiles_ok((1, 8, 16), 64, 128, 128)  # the dq pass's 128x64 default at head dim 128
    assert resident_tiles_ok((1, 8, 8), 32, 128, 128)  # the dk/dv pass's 64x32 default
