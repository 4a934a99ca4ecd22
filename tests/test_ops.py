"""The op layer: torch.library.opcheck on every op, and torch.compile(fullgraph=True) of the Modules."""

import pytest
import torch
from natten_kernels.ops import OPS

import natten

_PARAMS_1D = ([5], [2], [1], [True])
_PARAMS_2D = ([3, 4], [1, 2], [2, 1], [False, True])
_PARAMS_RPB = ([3, 5], [1, 1], [1, 1], [False, False])


def _fused_samples():
    q = torch.randn(2, 11, 4, 8)
    k, v = torch.randn(2, 11, 2, 8), torch.randn(2, 11, 2, 6)
    add_k, add_v = torch.randn(2, 3, 2, 8), torch.randn(2, 3, 2, 6)
    out, lse = torch.ops.natten.na_fused_forward(q, k, v, None, add_k, add_v, *_PARAMS_1D, 0.3)
    q2 = torch.randn(1, 7, 9, 2, 8, dtype=torch.float64)
    rpb = torch.randn(2, 5, 9, dtype=torch.float64)
    out2, lse2 = torch.ops.natten.na_fused_forward(q2, q2, q2, rpb, None, None, *_PARAMS_RPB, 0.5)
    return {
        "na_fused_forward": [
            (q, k, v, None, add_k, add_v, *_PARAMS_1D, 0.3),
            (q2, q2, q2, rpb, None, None, *_PARAMS_RPB, 0.5),
            (q.bfloat16(), k.bfloat16(), v.bfloat16(), None, None, None, *_PARAMS_1D, 1.0),
        ],
        "na_fused_backward": [
            (torch.randn_like(out), q, k, v, out, lse, torch.randn_like(lse), None, add_k, add_v, *_PARAMS_1D, 0.3),
            (torch.randn_like(out2), q2, q2, q2, out2, lse2, None, rpb, None, None, *_PARAMS_RPB, 0.5),
        ],
    }


def _unfused_samples():
    q = torch.randn(2, 2, 7, 9, 8)
    attn = torch.randn(2, 2, 7, 9, 12)
    q64 = q.double()
    rpb = torch.randn(2, 5, 9, dtype=torch.float64)
    attn_rpb = torch.randn(2, 2, 7, 9, 15, dtype=torch.float64)
    return {
        "na_qk_forward": [(q, q, None, *_PARAMS_2D), (q64, q64, rpb, *_PARAMS_RPB)],
        "na_qk_backward": [(attn, q, q, None, *_PARAMS_2D), (attn_rpb, q64, q64, rpb, *_PARAMS_RPB)],
        "na_av_forward": [(attn, q, *_PARAMS_2D), (attn.half(), q.half(), *_PARAMS_2D)],
        "na_av_backward": [(torch.randn_like(q), attn, q, *_PARAMS_2D)],
    }


SAMPLES = {**_fused_samples(), **_unfused_samples()}


def test_every_op_has_samples():
    assert set(SAMPLES) == set(OPS)


@pytest.mark.parametrize(
    "name,args",
    [(name, args) for name, cases in SAMPLES.items() for args in cases],
    ids=[f"{name}-{i}" for name, cases in SAMPLES.items() for i in range(len(cases))],
)
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.natten, name).default, args)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize(
    "cls,shape,kw",
    [
        (natten.NeighborhoodAttention1D, (2, 15, 16), dict(kernel_size=5, dilation=2, is_causal=True)),
        (natten.NeighborhoodAttention2D, (2, 9, 10, 16), dict(kernel_size=3, rel_pos_bias=True)),
        (natten.NeighborhoodAttention3D, (1, 5, 6, 7, 16), dict(kernel_size=(2, 3, 3), stride=(1, 1, 2))),
    ],
    ids=["1d", "2d", "3d"],
)
def test_compile_fullgraph_no_recompile(cls, shape, kw, fused):
    torch._dynamo.reset()
    natten.use_fused_na(fused)
    mod = cls(dim=16, num_heads=2, **kw)
    eager = [mod(x) for x in (torch.randn(shape), torch.randn(shape))]
    compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            x = torch.randn(shape, requires_grad=True)
            y = compiled(x)
            y.sum().backward()
            torch.testing.assert_close(y, mod(x))
            assert x.grad is not None and torch.isfinite(x.grad).all()
    del eager


def test_compile_inductor_fused():
    torch._dynamo.reset()
    mod = natten.NeighborhoodAttention2D(dim=16, num_heads=2, kernel_size=3)
    compiled = torch.compile(mod, fullgraph=True)
    x = torch.randn(2, 8, 8, 16)
    torch.testing.assert_close(compiled(x), mod(x))


def test_compiled_schemas_equal_the_op_spec():
    """csrc/ops.cpp defines the schemas for the CPU kernels; natten_kernels.ops.spec is the one Python
    copy (the stand-in registry, fakes, FLOP formulas and vmap rules are derived from it)."""
    from natten_kernels.ops.spec import SPECS

    assert set(SPECS) == set(OPS)
    for name, spec in SPECS.items():
        compiled = str(getattr(torch.ops.natten, name).default._schema)
        assert compiled == f"natten::{name}{spec.schema}", (compiled, spec.schema)


def test_op_spec_binds_arguments_by_name():
    from natten_kernels.ops.spec import bind

    a = bind("na_qk_forward", ("q", "k", None, [3], [1], [1], [False]))
    assert (a.q, a.rpb, a.kernel_size, a.config) == ("q", None, [3], [])
    with pytest.raises(TypeError, match="missing is_causal"):
        bind("na_qk_forward", ("q", "k", None, [3], [1], [1]))
    with pytest.raises(TypeError, match="no argument 'bogus'"):
        bind("na_av_forward", ("a", "v", [3], [1], [1], [False]), {"bogus": 1})
