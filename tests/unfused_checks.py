"""Checks of the unfused pipeline (na*d_qk -> softmax -> na*d_av) against the float64 reference, shared by
the CPU tests (test_unfused.py) and the GPU suite (gpu/test_unfused_gpu.py)."""

import torch
from natten_legacy.reference import na_av_reference, na_qk_reference
from natten_legacy.testing import assert_close_to_reference

import natten.functional as F

QK = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}
AV = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}


def inputs(case, dtype=torch.float64, requires_grad=True, device="cpu"):
    """Fresh random inputs, drawn in float64 on the CPU and cast to ``dtype`` on ``device``."""
    b, h, s, d = case.batch, case.heads, case.spatial, case.head_dim

    def rnd(*shape):
        return torch.randn(*shape, dtype=torch.float64).to(device=device, dtype=dtype)

    t = {"q": rnd(b, h, *s, d), "k": rnd(b, h, *s, d), "v": rnd(b, h, *s, d)}
    if case.rpb:
        t["rpb"] = rnd(h, *(2 * k - 1 for k in case.kernel_size))
    if case.additional:
        t["ak"] = rnd(b, h, case.additional, d)
        t["av"] = rnd(b, h, case.additional, d)
    return {n: x.requires_grad_(requires_grad) for n, x in t.items()}


def pipeline(case, t, qk=None, av=None):
    """qk -> softmax -> av, with natten ops (default) or the reference."""
    qk = qk or (lambda *a, **kw: QK[case.rank](*a, **kw))
    av = av or (lambda *a, **kw: AV[case.rank](*a, **kw))
    if qk is na_qk_reference:
        attn = qk(t["q"], t["k"], *case.geometry, rpb=t.get("rpb"), additional_keys=t.get("ak"))
        out = av(attn.softmax(-1), t["v"], *case.geometry, additional_values=t.get("av"))
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


def check_matches_reference(case, device="cpu"):
    """Values (attention weights with their -inf pattern, output) and every input gradient. Half
    precisions use the eager rule of natten_legacy.testing: the error bound is 3x that of the reference run in the
    same dtype (softmax and its backward run in half precision in both)."""
    low = {n: x.detach().requires_grad_() for n, x in inputs(case, case.dtype, device=device).items()}
    t = {n: x.detach().double().requires_grad_() for n, x in low.items()}  # upcast: same values
    ref_attn, ref_out = pipeline(case, t, na_qk_reference, na_av_reference)
    attn, out = pipeline(case, low)
    assert attn.device.type == device and attn.dtype == case.dtype
    up = torch.randn_like(ref_out)
    ref_g = torch.autograd.grad(ref_out, list(t.values()), up)
    got_g = torch.autograd.grad(out, list(low.values()), up.to(case.dtype))
    eager = dict.fromkeys(["attn", "out", *t])
    if case.dtype in (torch.float16, torch.bfloat16):
        e = {n: x.detach().requires_grad_() for n, x in low.items()}
        eager["attn"], eager["out"] = pipeline(case, e, na_qk_reference, na_av_reference)
        eager.update(zip(e, torch.autograd.grad(eager["out"], list(e.values()), up.to(case.dtype))))
    # -inf pattern must match exactly (causal slots); finite values within tolerance
    assert torch.equal(torch.isneginf(attn), torch.isneginf(ref_attn))
    assert_close_to_reference(attn, ref_attn, eager=eager["attn"], name="attn")
    assert_close_to_reference(out, ref_out, eager=eager["out"], name="out")
    for name, r, g in zip(t, ref_g, got_g):
        assert g.dtype == low[name].dtype, name
        assert_close_to_reference(g, r, eager=eager[name], name=f"d{name}")


def tiny(case):
    from dataclasses import replace

    return replace(case, batch=1, heads=1, head_dim=3, head_dim_v=3, additional=min(case.additional, 2))


def _tiny_output(case, device):
    """(f, inputs): the output of ``tiny(case)`` as a function of its inputs, and fresh inputs."""
    case = tiny(case)
    t = inputs(case, device=device)
    names = list(t)

    def f(*xs):
        return pipeline(case, dict(zip(names, xs)))[1]

    return f, tuple(t.values())


def check_gradcheck_and_gradgradcheck(case, device="cpu"):
    f, xs = _tiny_output(case, device)
    assert torch.autograd.gradcheck(f, xs)
    assert torch.autograd.gradgradcheck(f, xs)


def check_forward_mode_ad(case, device="cpu"):
    f, xs = _tiny_output(case, device)
    assert torch.autograd.gradcheck(
        f, xs, check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False, check_batched_grad=False
    )


def check_nested_tensor_forward(device="cpu"):
    qs = [torch.randn(2, n, 8, dtype=torch.float64, device=device) for n in (9, 12)]
    ks = [torch.randn_like(q) for q in qs]
    vs = [torch.randn_like(q) for q in qs]
    nq, nk, nv = (torch.nested.nested_tensor(x) for x in (qs, ks, vs))
    attn = F.na1d_qk(nq, nk, kernel_size=5, dilation=1)
    out = F.na1d_av(attn.softmax(-1), nv, kernel_size=5)
    assert out.is_nested
    for o, q, k, v in zip(out.unbind(), qs, ks, vs):
        ref = na_av_reference(na_qk_reference(q[None], k[None], 5).softmax(-1), v[None], 5)[0]
        torch.testing.assert_close(o, ref)


def check_outputs_fully_written(case, device="cpu"):
    """Run under the ``poisoned`` fixture: every output and gradient element must have been written."""
    t = inputs(case, case.dtype, device=device)
    attn, out = pipeline(case, t)
    out.float().sum().backward()
    assert not torch.isnan(attn).any() and not torch.isnan(out).any()
    for x in t.values():
        assert not torch.isnan(x.grad).any()


def check_ops(case, ops, config=(), device="cpu"):
    """The four unfused ops of ``ops`` (``torch.ops.natten`` or a launcher module) with ``config``, each
    output against the float64 reference and its autograd (qk used as a linear map for its backward)."""
    geo = (case.kernel_size, case.dilation, case.stride, case.is_causal)
    args = (*(list(g) for g in geo), list(config))
    t = inputs(case, case.dtype, requires_grad=False, device=device)
    q, k, v, rpb = t["q"], t["k"], t["v"], t.get("rpb")
    x = {n: y.double().requires_grad_() for n, y in t.items() if n in ("q", "k", "rpb")}

    ref_attn = na_qk_reference(x["q"], x["k"], *geo, rpb=x.get("rpb"))
    attn = ops.na_qk_forward(q, k, rpb, *args)
    assert attn.dtype == q.dtype and attn.shape == ref_attn.shape
    assert torch.equal(torch.isneginf(attn), torch.isneginf(ref_attn))
    assert_close_to_reference(attn, ref_attn.detach(), name="attn")

    up = torch.randn(ref_attn.shape, dtype=torch.float64).to(device=device, dtype=case.dtype)
    linear = ref_attn.masked_fill(torch.isneginf(ref_attn), 0.0)
    ref_g = dict(zip(x, torch.autograd.grad(linear, list(x.values()), up.double())))
    dq, dk, drpb = ops.na_qk_backward(up, q, k, rpb, *args)
    for name, got in (("q", dq), ("k", dk), ("rpb", drpb)):
        if name in ref_g:
            assert got.dtype == t[name].dtype and got.shape == t[name].shape, name
            assert_close_to_reference(got, ref_g[name], name=f"qk_backward d{name}")

    w = torch.softmax(ref_attn.detach(), -1).to(case.dtype)
    wx, vx = w.double().requires_grad_(), v.double().requires_grad_()
    ref_out = na_av_reference(wx, vx, *geo)
    out = ops.na_av_forward(w, v, *args)
    assert out.dtype == v.dtype
    assert_close_to_reference(out, ref_out.detach(), name="av")
    up = torch.randn(ref_out.shape, dtype=torch.float64).to(device=device, dtype=case.dtype)
    ref_gw, ref_gv = torch.autograd.grad(ref_out, [wx, vx], up.double())
    g_attn, dv = ops.na_av_backward(up, w, v, *args)
    assert g_attn.dtype == w.dtype and dv.dtype == v.dtype
    assert_close_to_reference(g_attn, ref_gw, name="av_backward dattn")
    assert_close_to_reference(dv, ref_gv, name="av_backward dv")
