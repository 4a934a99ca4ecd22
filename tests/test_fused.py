"""Fused na1d/na2d/na3d against the float64 reference oracle: outputs, LSE and every gradient."""

import pytest
import torch
from natten_legacy.reference import na_reference
from natten_legacy.testing import assert_close_to_reference

import natten.functional as F
from cases import fused_cases
from helpers import cast, fused_inputs, grads

NA = {1: F.na1d, 2: F.na2d, 3: F.na3d}
CASES = fused_cases("cpu")


def _run(fn, case, t, **kw):
    return fn(
        t["q"],
        t["k"],
        t["v"],
        case.kernel_size,
        case.dilation,
        case.is_causal,
        rpb=t.get("rpb"),
        additional_keys=t.get("additional_keys"),
        additional_values=t.get("additional_values"),
        stride=case.stride,
        **kw,
    )


def _reference(case, t, **kw):
    return na_reference(
        t["q"],
        t["k"],
        t["v"],
        case.kernel_size,
        case.dilation,
        case.stride,
        case.is_causal,
        rpb=t.get("rpb"),
        additional_keys=t.get("additional_keys"),
        additional_values=t.get("additional_values"),
        **kw,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_backward_match_reference(case):
    low = cast(fused_inputs(case), case.dtype)
    upcast = cast(low, torch.float64)  # the reference sees exactly the values the kernel sees
    ref_out, ref_lse = _reference(case, upcast, return_lse=True)
    upstream = torch.randn_like(ref_out).to(case.dtype)
    upstream_lse = torch.randn_like(ref_lse)
    ref_grads = grads((ref_out, ref_lse), upcast, (upstream.double(), upstream_lse))

    out, lse = _run(NA[case.rank], case, low, return_lse=True)
    assert out.dtype == case.dtype and out.shape == ref_out.shape
    assert lse.dtype == (torch.float64 if case.dtype == torch.float64 else torch.float32)
    got_grads = grads((out, lse), low, (upstream, upstream_lse.to(lse.dtype)))

    eager, eager_lse, eager_grads = None, None, {}
    if case.dtype != torch.float64:  # the same math in the same dtype, by plain torch
        e = cast(low, case.dtype)
        eager, eager_lse = _reference(case, e, return_lse=True)
        eager_grads = grads((eager, eager_lse), e, (upstream, upstream_lse.to(eager_lse.dtype)))
    assert_close_to_reference(out, ref_out, eager=eager, name="out")
    assert_close_to_reference(lse, ref_lse, eager=eager_lse, name="lse")
    for name, ref_g in ref_grads.items():
        assert got_grads[name] is not None, f"no gradient for {name}"
        assert got_grads[name].dtype == low[name].dtype
        assert_close_to_reference(got_grads[name], ref_g, eager=eager_grads.get(name), name=f"d{name}")


def test_scale_options_agree():
    """The seeds' three ways of scaling give one result."""
    q, k, v = (torch.randn(2, 9, 10, 2, 16, dtype=torch.float64) for _ in range(3))
    scale = 16**-0.5
    o = F.na2d(q, k, v, kernel_size=(7, 3))
    o1 = F.na2d(q * scale, k, v, kernel_size=(7, 3), scale=1.0)
    o2 = F.na2d(q * scale**0.5, k * scale**0.5, v, kernel_size=(7, 3), scale=1.0)
    torch.testing.assert_close(o, o1)
    torch.testing.assert_close(o, o2)
    ref = na_reference(q, k, v, (7, 3), scale=0.3)
    torch.testing.assert_close(F.na2d(q, k, v, (7, 3), scale=0.3), ref)


def test_outputs_fully_written(poisoned):
    """Outputs start as NaN (deterministic mode's fill); any element the kernel skips stays NaN."""
    case = CASES[3]
    t = fused_inputs(case)
    out, lse = _run(NA[case.rank], case, t, return_lse=True)
    (out.sum() + lse.sum()).backward()
    for x in (out, lse, *(v.grad for v in t.values())):
        assert not torch.isnan(x).any()


def test_backward_is_deterministic():
    torch.use_deterministic_algorithms(True)
    case = CASES[10]
    runs = []
    for _ in range(2):
        t = fused_inputs(case)
        torch.manual_seed(1)
        for x in t.values():
            x.data = torch.randn_like(x)
        out = _run(NA[case.rank], case, t)
        out.backward(torch.ones_like(out))
        runs.append([x.grad.clone() for x in t.values()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_non_contiguous_inputs():
    q, k, v = (torch.randn(2, 4, 11, 13, 8, dtype=torch.float64).permute(0, 2, 3, 1, 4) for _ in range(3))
    assert not q.is_contiguous()
    out = F.na2d(q, k, v, 5, 2)
    torch.testing.assert_close(out, na_reference(q, k, v, 5, 2))


def test_empty_batch():
    q = torch.randn(0, 9, 2, 8)
    out = F.na1d(q, q, q, 3)
    assert out.shape == (0, 9, 2, 8)


def test_autograd_function_only_when_gradients_are_needed(monkeypatch):
    """Inference calls the op alone (``Function.apply`` binds its signature on every call, host time a
    small kernel waits on); a call that needs gradients goes through the Function, and both agree."""
    from natten.autograd.fused import FusedNeighborhoodAttention

    applied = []
    apply = FusedNeighborhoodAttention.apply
    monkeypatch.setattr(FusedNeighborhoodAttention, "apply", lambda *a: applied.append(1) or apply(*a))
    q, k, v = (torch.randn(2, 9, 10, 2, 8, dtype=torch.float64) for _ in range(3))
    inference = F.na2d(q, k, v, (5, 3), 1, (True, False))
    with torch.no_grad():
        F.na2d(q.requires_grad_(), k, v, (5, 3))
    assert applied == []
    torch.testing.assert_close(inference, na_reference(q.detach(), k, v, (5, 3), is_causal=(True, False)))
    training = F.na2d(q, k, v, (5, 3), 1, (True, False))
    assert applied == [1]
    assert torch.equal(training.detach(), inference)
    training.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_double_backward_raises_clearly():
    q, k, v = (torch.randn(1, 9, 1, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = F.na1d(q, k, v, 3)
    with pytest.raises(RuntimeError, match="first-order gradients only; for double backward use the unfused"):
        torch.autograd.grad(out.sum(), q, create_graph=True)


@pytest.mark.extended
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_larger_problem(dtype):
    from dataclasses import replace

    case = replace(
        CASES[2],
        spatial=(40, 45),
        kernel_size=(13, 9),
        dilation=(2, 3),
        stride=(1, 1),
        is_causal=(False, False),
        rpb=True,
        head_dim=32,
        head_dim_v=32,
        dtype=dtype,
    )
    test_forward_backward_match_reference(case)
