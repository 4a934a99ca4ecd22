"""Op-level tests of the compiled CPU kernels (``torch.ops.natten.*``) against the float64 reference.

Every op is called directly, below the functional API: shapes, dtypes, contiguity and values of each
output are checked against ``natten_legacy.reference`` evaluated in float64 on the same (upcast) inputs,
and gradients against torch autograd through that reference. float32/float64 use the default
tolerances of ``natten_legacy.testing``; float16/bfloat16 follow its eager rule (at most 3x the error of
the same computation done eagerly in that dtype, with the dtype's floor).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace

import natten_kernels._library as _library
import pytest
import torch
from natten_legacy.reference import na_av_reference, na_qk_reference, na_reference
from natten_legacy.testing import assert_close, assert_close_to_reference, default_tolerances

from cases import DTYPE_NAMES, Case
from helpers import NAMES, case_tensors, reference

pytestmark = pytest.mark.skipif(not _library.load(), reason=f"natten-kernels library: {_library.load_error()}")

ops = torch.ops.natten
HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class OpCase(Case):
    """A Case (float32 by default) whose id also names the head dims and a batch other than 2."""

    dtype: torch.dtype = torch.float32

    @property
    def params(self) -> tuple[list[int], list[int], list[int], list[bool]]:
        return tuple(list(x) for x in self.geometry)

    @property
    def id(self) -> str:
        parts = self.geometry_id_parts()
        parts.append(f"hd{self.head_dim}" + (f":{self.head_dim_v}" if self.head_dim_v != self.head_dim else ""))
        if self.batch != 2:
            parts.append(f"b{self.batch}")
        parts.append(DTYPE_NAMES[self.dtype])
        return "-".join(parts)


def _params(cases, extended):
    """The default-tier cases, then the extended ones (marked: run with NATTEN_EXTENDED_TESTS=1)."""
    return [pytest.param(c, id=c.id) for c in cases] + [
        pytest.param(c, id=c.id, marks=pytest.mark.extended) for c in extended
    ]


# Sizes are deliberately not multiples of anything; head dims 8 and 12 take the packed-copy paths of the
# kernels, multiples of 16 the zero-copy ones.
FUSED_CASES = [
    OpCase((37,), (7,)),
    OpCase((40,), (8,), is_causal=(True,), head_dim=16, head_dim_v=32),
    OpCase((41,), (5,), dilation=(3,), stride=(2,), head_dim_v=12),
    OpCase((64,), (16,), stride=(16,), batch=1),
    OpCase((9, 11), (3, 5), dilation=(2, 1), stride=(1, 2), is_causal=(False, True)),
    OpCase((13, 10), (7, 5), dilation=(1, 2), rpb=True, head_dim=16),
    OpCase((8, 12), (4, 6), stride=(2, 3), additional=3, head_dim_v=12),
    OpCase((7, 9), (3, 3), heads=4, kv_heads=2, head_dim=16, head_dim_v=32),
    OpCase((5, 6, 7), (3, 2, 3), (1, 2, 2), (1, 2, 3), (True, False, False), additional=2, heads=4, kv_heads=2),
    OpCase((4, 6, 8), (3, 3, 3), rpb=True, head_dim=32, head_dim_v=16),
    OpCase((9, 11), (3, 5), dilation=(2, 1), stride=(1, 2), is_causal=(False, True), dtype=torch.float64),
    OpCase((13, 10), (7, 5), dilation=(1, 2), rpb=True, additional=2, dtype=torch.float64),
    OpCase((8, 12), (4, 6), stride=(2, 3), additional=3, dtype=torch.float16),
    OpCase((7, 9), (3, 3), heads=4, kv_heads=2, rpb=True, head_dim=16, dtype=torch.bfloat16),
    OpCase((5, 6, 7), (3, 2, 3), dilation=(1, 2, 2), is_causal=(True, False, True), dtype=torch.bfloat16),
]

FUSED_EXTENDED = [
    OpCase((32, 32), (9, 9), dilation=(2, 3), rpb=True, additional=5, heads=4, kv_heads=2, head_dim=64, head_dim_v=32),
    OpCase((512,), (33,), is_causal=(True,), stride=(4,), head_dim=32, batch=1),
    OpCase((300,), (64,), dilation=(3,), heads=1, kv_heads=1, head_dim=128, head_dim_v=64, batch=1),
    OpCase((8, 10, 12), (5, 3, 7), (1, 3, 1), (2, 1, 3), (True, False, True), heads=6, kv_heads=3, head_dim=24),
    OpCase((24, 20), (7, 6), rpb=False, is_causal=(True, True), head_dim=48, dtype=torch.float16),
    OpCase((16, 18), (5, 7), rpb=True, additional=4, head_dim=32, dtype=torch.bfloat16),
    OpCase((10, 9, 11), (3, 3, 3), dilation=(3, 2, 3), rpb=True, head_dim=16, dtype=torch.float64),
]

UNFUSED_CASES = [
    OpCase((37,), (7,), rpb=True),
    OpCase((40,), (8,), is_causal=(True,), head_dim=16),
    OpCase((41,), (5,), dilation=(3,), stride=(2,), head_dim=12, head_dim_v=16),
    OpCase((9, 11), (3, 5), dilation=(2, 1), stride=(1, 2), is_causal=(False, True)),
    OpCase((13, 10), (7, 5), dilation=(1, 2), rpb=True, head_dim=16, head_dim_v=32),
    OpCase((5, 6, 7), (3, 2, 3), dilation=(1, 2, 2), stride=(1, 2, 3), is_causal=(True, False, True)),
    OpCase((4, 6, 8), (3, 3, 3), rpb=True, head_dim=32, head_dim_v=16),
    OpCase((13, 10), (7, 5), dilation=(1, 2), rpb=True, dtype=torch.float64),
    OpCase((9, 11), (3, 5), stride=(1, 2), is_causal=(False, True), dtype=torch.float16),
    OpCase((7, 9), (3, 3), rpb=True, head_dim=16, dtype=torch.bfloat16),
]

UNFUSED_EXTENDED = [
    OpCase((32, 32), (9, 9), dilation=(2, 3), rpb=True, head_dim=64, head_dim_v=32),
    OpCase((512,), (33,), is_causal=(True,), stride=(4,), head_dim=32, batch=1),
    OpCase((8, 10, 12), (5, 3, 7), dilation=(1, 3, 1), stride=(2, 1, 3), is_causal=(True, False, True), head_dim=24),
    OpCase((16, 18), (5, 7), rpb=True, head_dim=32, dtype=torch.bfloat16),
]


# ---------------------------------------------------------------------------------------------------------
# helpers


def _randn(*shape, dtype, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _check(actual, reference, name, eager=None):
    """The reference comparison; `eager` (same computation in the tested dtype) for half types."""
    if actual.dtype in HALF and eager is not None:
        return assert_close_to_reference(actual, reference, eager=eager, name=name)
    return assert_close_to_reference(actual, reference, name=name)


def _check_new_tensor(t, shape, dtype, name):
    assert tuple(t.shape) == tuple(shape), f"{name}: shape {list(t.shape)}, expected {list(shape)}"
    assert t.dtype == dtype, f"{name}: dtype {t.dtype}, expected {dtype}"
    assert t.is_contiguous(), f"{name} is not contiguous"
    assert not t.isnan().any(), f"{name} contains NaN"


def _grads(outputs, cotangents, inputs):
    loss = sum((o * c).sum() for o, c in zip(outputs, cotangents))
    present = [x for x in inputs if x is not None]
    got = iter(torch.autograd.grad(loss, present))
    return [None if x is None else next(got) for x in inputs]


def _fused_inputs(case, gen):
    """(q, k, v, rpb, additional_keys, additional_values), None where the case has no such input."""
    t = case_tensors(case, lambda *shape: _randn(*shape, dtype=case.dtype, gen=gen))
    return tuple(t.get(n) for n in NAMES)


def _fused_reference(case, inputs, scale, cotangents, dtype):
    """(out, lse) and the gradients of <out, grad_out> + <lse, grad_lse>, computed in `dtype`."""
    leaves = [None if x is None else x.detach().to(dtype).requires_grad_() for x in inputs]
    out, lse = reference(case, dict(zip(NAMES, leaves)), scale=scale, return_lse=True)
    cots = [c.to(dtype) for c in cotangents]
    return out.detach(), lse.detach(), _grads((out, lse), cots, leaves)


def _run_fused_case(case, config_forward=(), config_backward=()):
    gen = torch.Generator().manual_seed(0)
    inputs = _fused_inputs(case, gen)
    q, k, v, rpb, ka, va = inputs
    scale = 0.7 * case.head_dim**-0.5
    B, S, Hq = case.batch, case.spatial, case.heads
    lse_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32

    out, lse = ops.na_fused_forward(q, k, v, rpb, ka, va, *case.params, scale, list(config_forward))
    _check_new_tensor(out, (B, *S, Hq, case.head_dim_v), case.dtype, "out")
    _check_new_tensor(lse, (B, *S, Hq), lse_dtype, "lse")

    grad_out = _randn(*out.shape, dtype=case.dtype, gen=gen)
    grad_lse = _randn(*lse.shape, dtype=lse.dtype, gen=gen)
    grads = ops.na_fused_backward(
        grad_out, q, k, v, out, lse, grad_lse, rpb, ka, va, *case.params, scale, list(config_backward)
    )
    names = ("dq", "dk", "dv", "drpb", "d_additional_keys", "d_additional_values")
    for name, g, x in zip(names, grads, inputs):
        if x is None:
            _check_new_tensor(g, (0,), q.dtype, name)
        else:
            _check_new_tensor(g, x.shape, x.dtype, name)

    ref_out, ref_lse, ref_grads = _fused_reference(case, inputs, scale, (grad_out, grad_lse), torch.float64)
    eager = (None, None, [None] * 6)
    if case.dtype in HALF:
        eager = _fused_reference(case, inputs, scale, (grad_out, grad_lse), case.dtype)
    _check(out, ref_out, "out", eager[0])
    _check(lse, ref_lse, "lse")
    for name, g, ref, e in zip(names, grads, ref_grads, eager[2]):
        if ref is not None:
            _check(g, ref, name, e)


def _unfused_inputs(case, gen):
    B, H, S, dt = case.batch, case.heads, case.spatial, case.dtype
    q = _randn(B, H, *S, case.head_dim, dtype=dt, gen=gen)
    k = _randn(B, H, *S, case.head_dim, dtype=dt, gen=gen)
    v = _randn(B, H, *S, case.head_dim_v, dtype=dt, gen=gen)
    rpb = _randn(H, *(2 * x - 1 for x in case.kernel_size), dtype=dt, gen=gen) if case.rpb else None
    return q, k, v, rpb


def _num_slots(case):
    n = 1
    for x in case.kernel_size:
        n *= x
    return n


# ---------------------------------------------------------------------------------------------------------
# fused ops


@pytest.mark.parametrize("case", _params(FUSED_CASES, FUSED_EXTENDED))
def test_fused_forward_backward(case):
    _run_fused_case(case)


@pytest.mark.parametrize(
    "config_forward,config_backward", [((1,), (1,)), ((5,), (2,)), ((64,), (7,))], ids=["q1-s1", "q5-s2", "q64-s7"]
)
def test_fused_configs(config_forward, config_backward):
    _run_fused_case(
        OpCase((6, 21), (3, 7), dilation=(1, 2), rpb=True, additional=2, heads=4, kv_heads=2),
        config_forward,
        config_backward,
    )


def test_fused_backward_is_deterministic():
    case = OpCase((12, 13), (5, 5), rpb=True, additional=3, heads=4, kv_heads=2, batch=1, head_dim=16)
    gen = torch.Generator().manual_seed(1)
    q, k, v, rpb, ka, va = _fused_inputs(case, gen)
    out, lse = ops.na_fused_forward(q, k, v, rpb, ka, va, *case.params, 0.25)
    grad_out = torch.randn(out.shape, generator=gen)
    for config in ([], [3]):  # the default, and several splits reduced in a fixed order
        first = ops.na_fused_backward(grad_out, q, k, v, out, lse, None, rpb, ka, va, *case.params, 0.25, config)
        for _ in range(3):
            again = ops.na_fused_backward(grad_out, q, k, v, out, lse, None, rpb, ka, va, *case.params, 0.25, config)
            for a, b in zip(first, again):
                assert torch.equal(a, b)


def test_fused_non_contiguous_inputs():
    case = OpCase((9, 10), (3, 5), rpb=True, additional=2, heads=2, kv_heads=2, head_dim=16)
    gen = torch.Generator().manual_seed(2)
    inputs = _fused_inputs(case, gen)

    # Same values, scrambled memory: channels-first storage, and every other element of a wider tensor.
    def scramble(x):
        if x is None:
            return None
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        wide[..., ::2] = x
        y = wide[..., ::2]
        return y.transpose(0, -1).contiguous().transpose(0, -1) if x.dim() > 3 else y

    scrambled = [scramble(x) for x in inputs]
    assert not scrambled[0].is_contiguous()
    out, lse = ops.na_fused_forward(*inputs, *case.params, 0.3)
    out2, lse2 = ops.na_fused_forward(*scrambled, *case.params, 0.3)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    torch.testing.assert_close(lse2, lse, rtol=0, atol=0)
    g = torch.randn(out.shape, generator=gen)
    grads = ops.na_fused_backward(g, *inputs[:3], out, lse, None, *inputs[3:], *case.params, 0.3)
    scrambled_out = out.transpose(0, 1).contiguous().transpose(0, 1)
    grads2 = ops.na_fused_backward(
        g.transpose(0, 1).contiguous().transpose(0, 1),
        *scrambled[:3],
        scrambled_out,
        lse,
        None,
        *scrambled[3:],
        *case.params,
        0.3,
    )
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_fused_mixed_precision_rpb():
    """rpb may have its own dtype; drpb comes back in it."""
    case = OpCase((7, 8), (3, 5), heads=2, kv_heads=1, head_dim=16, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(3)
    q, k, v, _, _, _ = _fused_inputs(case, gen)
    rpb = torch.randn(2, 5, 9, generator=gen)
    out, lse = ops.na_fused_forward(q, k, v, rpb, None, None, *case.params, 0.25)
    drpb = ops.na_fused_backward(out, q, k, v, out, lse, None, rpb, None, None, *case.params, 0.25)[3]
    assert drpb.dtype == torch.float32 and drpb.shape == rpb.shape
    leaves = [x.double().requires_grad_() for x in (q, k, v, rpb)]
    ref_out = na_reference(*leaves[:3], case.kernel_size, rpb=leaves[3], scale=0.25)
    (ref_drpb,) = torch.autograd.grad((ref_out * out.double()).sum(), [leaves[3]])
    atol, rtol = default_tolerances(torch.bfloat16)
    assert_close(out, ref_out, atol=atol, rtol=rtol, name="out")
    assert_close(drpb, ref_drpb, atol=atol * ref_drpb.abs().max().item(), rtol=rtol, name="drpb")


# ---------------------------------------------------------------------------------------------------------
# unfused ops


def _run_unfused_case(case):
    gen = torch.Generator().manual_seed(0)
    q, k, v, rpb = _unfused_inputs(case, gen)
    B, H, S, K = case.batch, case.heads, case.spatial, _num_slots(case)
    dt = case.dtype

    # QK forward
    attn = ops.na_qk_forward(q, k, rpb, *case.params)
    assert tuple(attn.shape) == (B, H, *S, K) and attn.dtype == dt and attn.is_contiguous()
    assert not attn.isnan().any()
    leaves = [None if x is None else x.double().requires_grad_() for x in (q, k, rpb)]
    ref_attn = na_qk_reference(
        leaves[0], leaves[1], case.kernel_size, case.dilation, case.stride, case.is_causal, rpb=leaves[2]
    )
    valid = ref_attn.isfinite()
    eager = None
    if dt in HALF:
        eager = na_qk_reference(q, k, case.kernel_size, case.dilation, case.stride, case.is_causal, rpb=rpb)
    _check(attn, ref_attn.detach(), "attn", eager)  # -inf on invalid slots must match exactly

    # QK backward: garbage on invalid slots of grad_attn must be ignored
    grad_attn = _randn(*attn.shape, dtype=dt, gen=gen)
    dq, dk, drpb = ops.na_qk_backward(grad_attn, q, k, rpb, *case.params)
    _check_new_tensor(dq, q.shape, dt, "dq")
    _check_new_tensor(dk, k.shape, dt, "dk")
    _check_new_tensor(drpb, rpb.shape if rpb is not None else (0,), dt, "drpb")
    masked = grad_attn.double().masked_fill(~valid, 0)
    ref = _grads((ref_attn.masked_fill(~valid, 0),), (masked,), leaves)
    eager_grads = [None] * 3
    if dt in HALF:
        half_leaves = [None if x is None else x.detach().requires_grad_() for x in (q, k, rpb)]
        e = na_qk_reference(
            half_leaves[0],
            half_leaves[1],
            case.kernel_size,
            case.dilation,
            case.stride,
            case.is_causal,
            rpb=half_leaves[2],
        )
        eager_grads = _grads((e.masked_fill(~valid, 0),), (masked.to(dt),), half_leaves)
    for name, got, r, e in zip(("dq", "dk", "drpb"), (dq, dk, drpb), ref, eager_grads):
        if r is not None:
            _check(got, r, name, e)

    # AV forward: invalid slots hold NaN, which must not leak
    weights = torch.softmax(ref_attn.detach(), dim=-1).to(dt).masked_fill(~valid, float("nan"))
    out = ops.na_av_forward(weights, v, *case.params)
    _check_new_tensor(out, v.shape, dt, "out")
    av_leaves = [weights.double().requires_grad_(), v.double().requires_grad_()]
    ref_out = na_av_reference(*av_leaves, case.kernel_size, case.dilation, case.stride, case.is_causal)
    eager_out = None
    if dt in HALF:
        eager_out = na_av_reference(weights, v, case.kernel_size, case.dilation, case.stride, case.is_causal)
    _check(out, ref_out.detach(), "out", eager_out)

    # AV backward: grad_attn is zero on invalid slots
    grad_out = _randn(*out.shape, dtype=dt, gen=gen)
    grad_weights, dv = ops.na_av_backward(grad_out, weights, v, *case.params)
    assert tuple(grad_weights.shape) == tuple(weights.shape) and grad_weights.dtype == dt
    assert grad_weights.is_contiguous() and not grad_weights.isnan().any()
    _check_new_tensor(dv, v.shape, dt, "dv")
    assert (grad_weights[~valid] == 0).all()
    ref_gw, ref_dv = _grads((ref_out,), (grad_out.double(),), av_leaves)
    eager_gw = eager_dv = None
    if dt in HALF:
        half_leaves = [weights.detach().requires_grad_(), v.detach().requires_grad_()]
        e = na_av_reference(*half_leaves, case.kernel_size, case.dilation, case.stride, case.is_causal)
        eager_gw, eager_dv = _grads((e,), (grad_out,), half_leaves)
        eager_gw = eager_gw.masked_fill(~valid, 0)
    _check(grad_weights, ref_gw.masked_fill(~valid, 0), "grad_attn", eager_gw)
    _check(dv, ref_dv, "dv", eager_dv)


@pytest.mark.parametrize("case", _params(UNFUSED_CASES, UNFUSED_EXTENDED))
def test_unfused_forward_backward(case):
    _run_unfused_case(case)


def test_unfused_backward_is_deterministic():
    case = OpCase((11, 12), (5, 3), rpb=True, heads=1, batch=1, head_dim=16)
    gen = torch.Generator().manual_seed(4)
    q, k, v, rpb = _unfused_inputs(case, gen)
    attn = ops.na_qk_forward(q, k, rpb, *case.params)
    first = ops.na_qk_backward(attn, q, k, rpb, *case.params) + ops.na_av_backward(v, attn.softmax(-1), v, *case.params)
    again = ops.na_qk_backward(attn, q, k, rpb, *case.params) + ops.na_av_backward(v, attn.softmax(-1), v, *case.params)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# edge cases and safety nets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_empty_batch(dtype):
    params = ([3, 3], [1, 1], [1, 1], [False, False])
    q = torch.randn(0, 5, 6, 4, 8, dtype=dtype)
    kv = torch.randn(0, 5, 6, 2, 8, dtype=dtype)
    rpb = torch.randn(4, 5, 5, dtype=dtype)
    add = torch.randn(0, 3, 2, 8, dtype=dtype)
    out, lse = ops.na_fused_forward(q, kv, kv, rpb, add, add, *params, 0.5)
    assert out.shape == (0, 5, 6, 4, 8) and lse.shape == (0, 5, 6, 4)
    grads = ops.na_fused_backward(out, q, kv, kv, out, lse, lse, rpb, add, add, *params, 0.5)
    assert [tuple(g.shape) for g in grads] == [
        tuple(q.shape),
        tuple(kv.shape),
        tuple(kv.shape),
        (4, 5, 5),
        tuple(add.shape),
        tuple(add.shape),
    ]
    assert (grads[3] == 0).all()
    qh = torch.randn(0, 4, 5, 6, 8, dtype=dtype)
    attn = ops.na_qk_forward(qh, qh, rpb, *params)
    assert attn.shape == (0, 4, 5, 6, 9)
    assert [g.shape for g in ops.na_qk_backward(attn, qh, qh, rpb, *params)] == [qh.shape, qh.shape, rpb.shape]
    assert ops.na_av_forward(attn, qh, *params).shape == qh.shape
    assert [g.shape for g in ops.na_av_backward(qh, attn, qh, *params)] == [attn.shape, qh.shape]


def test_isa_fallbacks_match_reference():
    """The baseline and AVX2 builds of the kernels (picked at load time) compute the same results."""
    script = textwrap.dedent(
        """
        import torch, natten_kernels
        from natten_legacy.reference import na_reference, na_qk_reference
        from natten_legacy.testing import assert_close_to_reference
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 7, 9, 2, 16, generator=g) for _ in range(3))
        rpb = torch.randn(2, 5, 5, generator=g)
        p = ([3, 3], [2, 1], [1, 2], [False, False])
        out, lse = torch.ops.natten.na_fused_forward(q, k, v, rpb, None, None, *p, 0.25)
        dq = torch.ops.natten.na_fused_backward(out, q, k, v, out, lse, None, rpb, None, None, *p, 0.25)[0]
        leaves = [x.double().requires_grad_() for x in (q, k, v, rpb)]
        ref = na_reference(*leaves[:3], (3, 3), (2, 1), (1, 2), rpb=leaves[3], scale=0.25)
        (ref_dq,) = torch.autograd.grad((ref * out.double()).sum(), [leaves[0]])
        assert_close_to_reference(out, ref.detach(), name="out")
        assert_close_to_reference(dq, ref_dq, name="dq")
        qh = q.transpose(1, 3).reshape(2, 2, 7, 9, 16).contiguous()
        attn = torch.ops.natten.na_qk_forward(qh, qh, rpb, *p)
        ref_attn = na_qk_reference(qh.double(), qh.double(), (3, 3), (2, 1), (1, 2), rpb=rpb.double())
        assert_close_to_reference(attn, ref_attn, name="attn")
        import ctypes
        lib = ctypes.CDLL(str(natten_kernels._library.library_path()))
        lib.natten_cpu_capability.restype = ctypes.c_char_p
        print(lib.natten_cpu_capability().decode())
        """
    )
    for capability in ("default", "avx2"):
        env = dict(os.environ, NATTEN_CPU_CAPABILITY=capability)
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        # On a CPU without AVX2 the avx2 request falls back to the baseline build.
        assert run.stdout.strip() in ("default", capability)


def _fused_call(q, k, v, rpb=None, ka=None, va=None, kernel=(3,), dilation=(1,), stride=(1,), causal=(False,)):
    return ops.na_fused_forward(q, k, v, rpb, ka, va, list(kernel), list(dilation), list(stride), list(causal), 1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel=(9,)), "kernel_size \\* dilation"),
        (dict(kernel=(3,), dilation=(3,)), "kernel_size \\* dilation"),
        (dict(stride=(4,)), "stride"),
        (dict(kernel=(3, 3), dilation=(1, 1), stride=(1, 1), causal=(False, False)), "dimensions"),
        (dict(k=torch.randn(2, 8, 3, 8)), "key/value heads"),
        (dict(k=torch.randn(2, 7, 2, 8)), "k must have shape"),
        (dict(v=torch.randn(2, 8, 2, 8, dtype=torch.float64)), "dtype"),
        (dict(rpb=torch.randn(4, 3)), "rpb must have shape"),
        (dict(ka=torch.randn(2, 3, 2, 8)), "together"),
        (dict(ka=torch.randn(2, 3, 2, 8), va=torch.randn(2, 4, 2, 8)), "additional_values must have shape"),
        (dict(q=torch.randn(2, 8, 4, 8).to(torch.int32)), "floating"),
    ],
    ids=[
        "kernel-too-large",
        "dilated-too-large",
        "stride-above-kernel",
        "rank-mismatch",
        "heads-not-dividing",
        "k-spatial-mismatch",
        "dtype-mismatch",
        "rpb-shape",
        "additional-half-given",
        "additional-shape",
        "integer-input",
    ],
)
def test_fused_rejects_memory_unsafe_arguments(kwargs, match):
    args = dict(q=torch.randn(2, 8, 4, 8), k=torch.randn(2, 8, 2, 8), v=torch.randn(2, 8, 2, 8))
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        _fused_call(**args)


def test_unfused_rejects_memory_unsafe_arguments():
    p = ([3], [1], [1], [False])
    q = torch.randn(2, 4, 8, 8)
    with pytest.raises(RuntimeError, match="k must have shape"):
        ops.na_qk_forward(q, torch.randn(2, 4, 9, 8), None, *p)
    with pytest.raises(RuntimeError, match="attn must have shape"):
        ops.na_av_forward(torch.randn(2, 4, 8, 4), q, *p)
    with pytest.raises(RuntimeError, match="grad_attn must have shape"):
        ops.na_qk_backward(torch.randn(2, 4, 8, 2), q, q, None, *p)
    with pytest.raises(RuntimeError, match="grad_out must have shape"):
        ops.na_av_backward(torch.randn(2, 4, 8, 7), torch.randn(2, 4, 8, 3), q, *p)
    with pytest.raises(RuntimeError, match="config"):
        ops.na_fused_forward(q.transpose(1, 2), q.transpose(1, 2), q.transpose(1, 2), None, None, None, *p, 1.0, [0])


def test_case_ids_are_unique():
    ids = [c.id for c in FUSED_CASES + FUSED_EXTENDED] + [c.id + "-unfused" for c in UNFUSED_CASES + UNFUSED_EXTENDED]
    assert len(ids) == len(set(ids))
    assert replace(FUSED_CASES[4], dtype=torch.float16).id == "2d-s9x11-k3x5-d2x1-st1x2-causal(F,T)-hd8-f16"
