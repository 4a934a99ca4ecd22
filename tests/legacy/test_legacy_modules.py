"""LegacyNeighborhoodAttention{1,2,3}D against the reference oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from natten_legacy import (
    LegacyNeighborhoodAttention,
    LegacyNeighborhoodAttention1D,
    LegacyNeighborhoodAttention2D,
    LegacyNeighborhoodAttention3D,
)
from natten_legacy.reference import na_reference
from natten_legacy.testing import assert_close, assert_close_to_reference

MODULES = {1: LegacyNeighborhoodAttention1D, 2: LegacyNeighborhoodAttention2D, 3: LegacyNeighborhoodAttention3D}
TOL = dict(atol=1e-12, rtol=1e-10)


def expected_forward(m, x):
    """The module's computation via the dense reference: pad, qkv, reference, crop, proj."""
    B, *S, C = x.shape
    R = len(S)
    pad = [max(0, k * d - L) for k, d, L in zip(m.kernel_size, m.dilation, S)]
    xp = F.pad(x, [0, 0] + [p for a in reversed(pad) for p in (0, a)])
    Sp = xp.shape[1:-1]
    q, k, v = m.qkv(xp).reshape(B, *Sp, 3, m.num_heads, m.head_dim).unbind(-3)
    out = na_reference(q, k, v, m.kernel_size, m.dilation, m.stride, m.is_causal, rpb=m.rpb, scale=m.scale)
    out = out.reshape(B, *Sp, C)[(slice(None), *(slice(0, L) for L in S))]
    assert out.shape == (B, *S, C) and m.rank == R
    return m.proj(out)


CASES = {  # id: (spatial, kwargs)
    "1d-k5-d2-rpb": ((13,), dict(kernel_size=5, dilation=2, rel_pos_bias=True)),
    "1d-k4-s2-causal": ((11,), dict(kernel_size=4, stride=2, is_causal=True)),
    "2d-k3x5-d(2,1)-s(1,3)-rpb": ((7, 9), dict(kernel_size=(3, 5), dilation=(2, 1), stride=(1, 3), rel_pos_bias=True)),
    "2d-k4-causal(T,F)": ((6, 7), dict(kernel_size=4, is_causal=(True, False))),
    "3d-k3-rpb": ((4, 5, 6), dict(kernel_size=3, rel_pos_bias=True)),
    "3d-k(2,3,4)-s(2,1,4)-causal(T,F,F)": (
        (3, 5, 8),
        dict(kernel_size=(2, 3, 4), stride=(2, 1, 4), is_causal=(True, False, False)),
    ),
    # Padding path: some axes shorter than kernel * dilation.
    "1d-k7-pad": ((5,), dict(kernel_size=7, rel_pos_bias=True)),
    "2d-k3-d3-pad": ((5, 10), dict(kernel_size=3, dilation=3, rel_pos_bias=True)),
    "3d-k3-pad-causal": ((2, 4, 3), dict(kernel_size=3, is_causal=(True, False, True))),
}


def make(rank, seed=0, dim=12, num_heads=3, **kwargs):
    torch.manual_seed(seed)
    m = MODULES[rank](dim, num_heads, **kwargs).double()
    if m.rpb is not None:
        with torch.no_grad():
            m.rpb.normal_()  # the 0.02-std init would hide indexing mistakes
    return m


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_module_matches_reference(case):
    S, kwargs = CASES[case]
    m = make(len(S), **kwargs)
    x = torch.randn(2, *S, 12, dtype=torch.float64)
    assert_close(m(x), expected_forward(m, x), name=case, **TOL)


def test_module_float32_within_tolerance_of_float64_reference():
    m = make(2, kernel_size=5, dilation=(1, 2), rel_pos_bias=True)
    x = torch.randn(2, 9, 11, 12, dtype=torch.float64)
    reference = expected_forward(m, x)
    m32 = m.float()
    assert_close_to_reference(m32(x.float()), reference, name="fp32 legacy module")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_forward_backward_and_rpb_gradient(rank):
    S = {1: (10,), 2: (6, 7), 3: (3, 5, 4)}[rank]
    torch.manual_seed(1)
    m = MODULES[rank](16, 2, 3, rel_pos_bias=True, attn_drop=0.1, proj_drop=0.1)
    x = torch.randn(2, *S, 16, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and x.grad.isfinite().all()
    assert m.rpb.grad is not None and m.rpb.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


def test_padding_path_gradient_is_cropped():
    """Padded positions are not part of the input: x.grad has the input's shape and is finite."""
    m = make(2, kernel_size=5, rel_pos_bias=True)
    x = torch.randn(1, 3, 4, 12, dtype=torch.float64, requires_grad=True)
    m(x).sum().backward()
    assert x.grad.shape == x.shape and x.grad.isfinite().all()


def test_attributes_and_state_dict():
    m = LegacyNeighborhoodAttention2D(32, 4, 7, dilation=2, rel_pos_bias=True, qk_scale=0.3, stride=(1, 3))
    assert (m.num_heads, m.head_dim, m.scale) == (4, 8, 0.3)
    assert m.kernel_size == (7, 7) and m.dilation == (2, 2) and m.stride == (1, 3) and m.is_causal == (False, False)
    assert m.rpb.shape == (4, 13, 13) and 0.015 < float(m.rpb.detach().std()) < 0.025  # trunc_normal_(std=0.02)
    assert set(m.state_dict()) == {"qkv.weight", "qkv.bias", "rpb", "proj.weight", "proj.bias"}
    assert isinstance(m.attn_drop, torch.nn.Dropout) and isinstance(m.proj_drop, torch.nn.Dropout)

    plain = LegacyNeighborhoodAttention1D(8, 2, 3, qkv_bias=False)
    assert plain.rpb is None and plain.scale == 4**-0.5
    assert set(plain.state_dict()) == {"qkv.weight", "proj.weight", "proj.bias"}
    assert LegacyNeighborhoodAttention is LegacyNeighborhoodAttention2D


def test_3d_depth_overrides():
    m = LegacyNeighborhoodAttention3D(8, 2, 5, dilation=2, kernel_size_d=3, dilation_d=1, rel_pos_bias=True)
    assert m.kernel_size == (3, 5, 5) and m.dilation == (1, 2, 2) and m.rpb.shape == (2, 5, 9, 9)
    with pytest.raises(ValueError, match="kernel_size_d"):
        LegacyNeighborhoodAttention3D(8, 2, (3, 3, 3), kernel_size_d=3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=10, num_heads=3, kernel_size=3), "num_heads"),
        (dict(dim=8, num_heads=2, kernel_size=1), "kernel_size"),
        (dict(dim=8, num_heads=2, kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(dim=8, num_heads=2, kernel_size=3, dilation=0), "dilation"),
        (dict(dim=8, num_heads=2, kernel_size=3, stride=4), "stride"),
        (dict(dim=8, num_heads=2, kernel_size=3, stride=0), "stride"),
        (dict(dim=8, num_heads=2, kernel_size=4, rel_pos_bias=True), "rel_pos_bias"),
        (dict(dim=8, num_heads=2, kernel_size=3, is_causal=(True, False), rel_pos_bias=True), "rel_pos_bias"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LegacyNeighborhoodAttention2D(**kwargs)


def test_forward_validation():
    m = LegacyNeighborhoodAttention2D(8, 2, 3)
    with pytest.raises(ValueError, match="dim=8"):
        m(torch.randn(1, 5, 5, 6))
    with pytest.raises(ValueError, match="spatial"):
        m(torch.randn(1, 5, 8))
