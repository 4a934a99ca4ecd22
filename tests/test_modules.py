"""NeighborhoodAttention Modules: fused and unfused paths, legacy agreement, padding, 3D overrides."""

import pytest
import torch
from natten_legacy import LegacyNeighborhoodAttention1D, LegacyNeighborhoodAttention2D, LegacyNeighborhoodAttention3D
from natten_legacy.reference import na_reference

import natten

MODULES = {1: natten.NeighborhoodAttention1D, 2: natten.NeighborhoodAttention2D, 3: natten.NeighborhoodAttention3D}
LEGACY = {1: LegacyNeighborhoodAttention1D, 2: LegacyNeighborhoodAttention2D, 3: LegacyNeighborhoodAttention3D}

CONFIGS = [
    (1, (17,), dict(kernel_size=5, dilation=3, is_causal=True)),
    (1, (12,), dict(kernel_size=7, rel_pos_bias=True, stride=2)),
    (2, (9, 11), dict(kernel_size=(3, 5), dilation=(2, 1), rel_pos_bias=True)),
    (2, (8, 9), dict(kernel_size=4, is_causal=(False, True))),
    (3, (5, 6, 7), dict(kernel_size=(3, 3, 5), is_causal=(True, False, False), stride=(1, 2, 1))),
    (2, (4, 5), dict(kernel_size=7, dilation=2, rel_pos_bias=True)),  # smaller than a neighborhood: padded
]
IDS = [f"{r}d-{'x'.join(map(str, s))}-" + ",".join(f"{k}={v}" for k, v in kw.items()) for r, s, kw in CONFIGS]


def _reference_module_output(mod, x):
    """The Module's math with the float64 reference oracle for the attention."""
    pad = [max(k * d - n, 0) for k, d, n in zip(mod.kernel_size, mod.dilation, x.shape[1:-1])]
    flat = []
    for p in reversed(pad):
        flat += [0, p]
    xp = torch.nn.functional.pad(x, [0, 0, *flat])
    b, *s, _ = xp.shape
    q, k, v = mod.qkv(xp).reshape(b, *s, 3, mod.num_heads, mod.head_dim).unbind(-3)
    o = na_reference(q, k, v, mod.kernel_size, mod.dilation, mod.stride, mod.is_causal, rpb=mod.rpb, scale=mod.scale)
    o = mod.proj(o.reshape(b, *s, -1))
    return o[(slice(None), *(slice(0, n) for n in x.shape[1:-1]))]


@pytest.mark.parametrize("rank,spatial,kw", CONFIGS, ids=IDS)
def test_fused_unfused_legacy_agree(rank, spatial, kw):
    torch.manual_seed(0)
    mod = MODULES[rank](dim=16, num_heads=2, **kw).double()
    legacy = LEGACY[rank](dim=16, num_heads=2, **kw).double()
    legacy.load_state_dict(mod.state_dict())
    x = torch.randn(2, *spatial, 16, dtype=torch.float64, requires_grad=True)
    ref = _reference_module_output(mod, x)
    fused = mod(x)
    natten.use_fused_na(False)
    unfused = mod(x)
    natten.use_fused_na(True)
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(unfused, ref)
    torch.testing.assert_close(legacy(x), ref)
    assert fused.shape == x.shape
    g_ref = torch.autograd.grad(ref.sum(), [x, *mod.parameters()], allow_unused=True)
    g = torch.autograd.grad(fused.sum(), [x, *mod.parameters()], allow_unused=True)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_3d_kernel_size_d_and_dilation_d():
    m = natten.NeighborhoodAttention3D(dim=128, kernel_size=7, kernel_size_d=5, dilation=2, dilation_d=3, num_heads=4)
    assert m.kernel_size == (5, 7, 7) and m.dilation == (3, 2, 2)
    out = m(torch.randn(1, 15, 14, 14, 128))
    assert out.shape == (1, 15, 14, 14, 128)


def test_attention_dropout_in_training_uses_unfused_path():
    torch.manual_seed(0)
    m = natten.NeighborhoodAttention2D(dim=16, num_heads=2, kernel_size=3, attn_drop=0.5)
    x = torch.randn(1, 6, 6, 16)
    m.train()
    a, b = m(x), m(x)
    assert not torch.equal(a, b)  # dropout on the attention weights
    m.eval()
    assert torch.equal(m(x), m(x))


def test_low_precision_module_runs():
    m = natten.NeighborhoodAttention2D(dim=32, num_heads=4, kernel_size=5, rel_pos_bias=True).to(torch.bfloat16)
    x = torch.randn(2, 10, 10, 32, dtype=torch.bfloat16, requires_grad=True)
    m(x).float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    assert m.rpb.grad is not None


def test_repr_mentions_parameters():
    r = repr(natten.NeighborhoodAttention2D(dim=16, num_heads=2, kernel_size=(3, 5), dilation=(1, 2)))
    assert "kernel_size=(3, 5)" in r and "dilation=(1, 2)" in r
