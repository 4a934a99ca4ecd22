"""The exchange's block copies (no processes): moving blocks of 2- and 4-byte tensors as 8-byte words
is a bitwise copy (NaN payloads and signed zeros included), through slices and index meshes alike,
and tensors whose channels or strides do not divide into words take the plain copy."""

from __future__ import annotations

import pytest
import torch

from natten.distributed.halo import assign, selector, take

MESH = ((0, 2, 3), (1, 4))  # positions that are not runs: an index mesh
RUNS = ((1, 2, 3), (0, 1, 2, 3))  # runs: slices


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])


def _grid(dtype, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 3, channels, generator=g).to(dtype)
    flat = _bits(x).view(-1)
    flat[::7] = _bits(torch.tensor([float("nan")], dtype=dtype))[0] ^ 1  # a NaN with another payload
    flat[3::11] = _bits(torch.tensor([-0.0], dtype=dtype))[0]
    return x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [8, 4, 3])
@pytest.mark.parametrize("index", [MESH, RUNS], ids=["mesh", "runs"])
def test_block_copies_are_bitwise(dtype, channels, index):
    x = _grid(dtype, channels)
    sel = selector(index, x.device)
    block = take(x, sel, copy=True)
    assert block.is_contiguous() and torch.equal(_bits(block), _bits(x[sel]))
    assert torch.equal(_bits(take(x, sel, flat=True)), _bits(x[sel].reshape(-1)))
    dst = torch.zeros_like(x)
    assign(dst, sel, block)
    want = torch.zeros_like(x)
    want[sel] = x[sel]
    assert torch.equal(_bits(dst), _bits(want))
    # a strided source and destination (a box of a larger grid), as the shard lands in its extended grid
    big = torch.zeros(2, 7, 9, 3, channels, dtype=dtype)
    assign(big, (slice(None), slice(1, 6), slice(2, 8)), x)
    assert torch.equal(_bits(big[:, 1:6, 2:8]), _bits(x)) and not _bits(big[:, 0]).any()


def test_copies_keep_a_block_apart_from_its_source():
    x = _grid(torch.bfloat16, 8)
    block = take(x, selector(RUNS, x.device), copy=True)
    block.zero_()
    assert _bits(x[:, 1:4, 0:4]).any()


def test_a_contiguous_block_flattens_without_a_copy():
    """A message packs each block flattened; a contiguous one (whole frames) is a view, copied once
    by the concatenation."""
    x = _grid(torch.bfloat16, 8)[:1].clone()  # one batch: frames 1-2 are one run of memory
    flat = take(x, (slice(None), slice(1, 3)), flat=True)
    assert flat.data_ptr() == x[:, 1:3].data_ptr() and flat.dtype == x.dtype
