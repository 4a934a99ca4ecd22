"""Unfused na*d_qk / na*d_av against the reference: values, gradients, gradgradcheck, forward AD, nested."""

import pytest
import torch
from natten_legacy.reference import na_av_reference, na_qk_reference
from natten_legacy.testing import assert_close_to_reference

import natten.functional as F
from cases import unfused_cases

QK = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}
AV = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}
CASES = unfused_cases("cpu")


def _inputs(case, dtype=torch.float64, requires_grad=True):
    b, h, s, d = case.batch, case.heads, case.spatial, case.head_dim
    t = {
        "q": torch.randn(b, h, *s, d, dtype=dtype),
        "k": torch.randn(b, h, *s, d, dtype=dtype),
        "v": torch.randn(b, h, *s, d, dtype=dtype),
    }
    if case.rpb:
        t["rpb"] = torch.randn(h, *(2 * k - 1 for k in case.kernel_size), dtype=dtype)
    if case.additional:
        t["ak"] = torch.randn(b, h, case.additional, d, dtype=dtype)
        t["av"] = torch.randn(b, h, case.additional, d, dtype=dtype)
    return {n: x.requires_grad_(requires_grad) for n, x in t.items()}


def _pipeline(case, t, qk=None, av=None):
    """qk -> softmax -> av, with natten ops (default) or the reference."""
    qk = qk or (lambda *a, **kw: QK[case.rank](*a, **kw))
    av = av or (lambda *a, **kw: AV[case.rank](*a, **kw))
    if qk is na_qk_reference:
        attn = qk(
            t["q"],
            t["k"],
            case.kernel_size,
            case.dilation,
            case.stride,
            case.is_causal,
            rpb=t.get("rpb"),
            additional_keys=t.get("ak"),
        )
        out = av(
            attn.softmax(-1),
            t["v"],
            case.kernel_size,
            case.dilation,
            case.stride,
            case.is_causal,
            additional_values=t.get("av"),
        )
    else:
        attn = qk(
            t["q"],
            t["k"],
            case.kernel_size,
            case.dilation,
            t.get("ak"),
            case.is_causal,
            t.get("rpb"),
            stride=case.stride,
        )
        out = av(
            attn.softmax(-1), t["v"], case.kernel_size, case.dilation, t.get("av"), case.is_causal, stride=case.stride
        )
    return attn, out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(case):
    low = {n: x.detach().to(case.dtype).requires_grad_() for n, x in _inputs(case).items()}
    t = {n: x.detach().double().requires_grad_() for n, x in low.items()}  # upcast: same values
    ref_attn, ref_out = _pipeline(case, t, na_qk_reference, na_av_reference)
    attn, out = _pipeline(case, low)
    # -inf pattern must match exactly (causal slots); finite values within tolerance
    assert torch.equal(torch.isneginf(attn), torch.isneginf(ref_attn))
    assert_close_to_reference(attn, ref_attn, name="attn")
    assert_close_to_reference(out, ref_out, name="out")
    up = torch.randn_like(ref_out)
    ref_g = torch.autograd.grad(ref_out, list(t.values()), up)
    got_g = torch.autograd.grad(out, list(low.values()), up.to(case.dtype))
    for name, r, g in zip(t, ref_g, got_g):
        assert_close_to_reference(g, r, name=f"d{name}")


def _tiny(case):
    from dataclasses import replace

    return replace(case, batch=1, heads=1, head_dim=3, head_dim_v=3, additional=min(case.additional, 2))


GRAD_CASES = [c for c in CASES if c.dtype == torch.float64 and len(c.spatial) < 3][:6] + [
    c for c in CASES if len(c.spatial) == 3 and max(c.spatial) <= 8
][:1]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradcheck_and_gradgradcheck(case):
    case = _tiny(case)
    t = _inputs(case)
    names = list(t)

    def f(*xs):
        return _pipeline(case, dict(zip(names, xs)))[1]

    assert torch.autograd.gradcheck(f, tuple(t.values()))
    assert torch.autograd.gradgradcheck(f, tuple(t.values()))


@pytest.mark.parametrize("case", GRAD_CASES[:4], ids=[c.id for c in GRAD_CASES[:4]])
def test_forward_mode_ad(case):
    case = _tiny(case)
    t = _inputs(case)
    names = list(t)

    def f(*xs):
        return _pipeline(case, dict(zip(names, xs)))[1]

    assert torch.autograd.gradcheck(
        f,
        tuple(t.values()),
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
        check_batched_grad=False,
    )


def test_forward_mode_matches_jvp_of_reference():
    from torch.autograd import forward_ad

    case = _tiny(CASES[2])
    t = _inputs(case, requires_grad=False)
    tangents = {n: torch.randn_like(x) for n, x in t.items()}
    with forward_ad.dual_level():
        duals = {n: forward_ad.make_dual(x, tangents[n]) for n, x in t.items()}
        got = forward_ad.unpack_dual(_pipeline(case, duals)[1]).tangent
    _, ref = torch.func.jvp(
        lambda *xs: _pipeline(case, dict(zip(t, xs)), na_qk_reference, na_av_reference)[1],
        tuple(t.values()),
        tuple(tangents.values()),
    )
    torch.testing.assert_close(got, ref)


def test_nested_tensor_forward():
    qs = [torch.randn(2, n, 8, dtype=torch.float64) for n in (9, 12)]
    ks = [torch.randn_like(q) for q in qs]
    vs = [torch.randn_like(q) for q in qs]
    nq, nk, nv = (torch.nested.nested_tensor(x) for x in (qs, ks, vs))
    attn = F.na1d_qk(nq, nk, kernel_size=5, dilation=1)
    out = F.na1d_av(attn.softmax(-1), nv, kernel_size=5)
    assert out.is_nested
    for o, q, k, v in zip(out.unbind(), qs, ks, vs):
        ref = na_av_reference(na_qk_reference(q[None], k[None], 5).softmax(-1), v[None], 5)[0]
        torch.testing.assert_close(o, ref)


def test_outputs_fully_written(poisoned):
    case = CASES[4]
    t = _inputs(case)
    attn, out = _pipeline(case, t)
    out.sum().backward()
    assert not torch.isnan(attn).any() and not torch.isnan(out).any()
    for x in t.values():
        assert not torch.isnan(x.grad).any()
