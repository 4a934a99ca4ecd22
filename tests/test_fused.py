"""Fused na1d/na2d/na3d against the float64 reference oracle: outputs, LSE and every gradient, for
every fused backend usable on the CPU, on the cases its declared capabilities admit."""

import pytest
import torch
from natten_legacy.reference import na_reference
from natten_legacy.testing import assert_close_to_reference

import natten
import natten.functional as F
from cases import Case, fused_cases, usable_backends
from helpers import call_api, cast, fused_inputs, grads, reference

NA = {1: F.na1d, 2: F.na2d, 3: F.na3d}
CASES = fused_cases("cpu")
BACKEND_CASES = [
    pytest.param(b.name, c, id=f"{b.name}-{c.id}")
    for b in usable_backends("fused", "cpu")
    for c in fused_cases("cpu", backend=b)
]


@pytest.mark.parametrize("backend,case", BACKEND_CASES)
def test_forward_backward_match_reference(backend, case):
    natten.use_backend(backend, force=True)
    low = cast(fused_inputs(case), case.dtype)
    upcast = cast(low, torch.float64)  # the reference sees exactly the values the kernel sees
    ref_out, ref_lse = reference(case, upcast, return_lse=True)
    upstream = torch.randn_like(ref_out).to(case.dtype)
    upstream_lse = torch.randn_like(ref_lse)
    ref_grads = grads((ref_out, ref_lse), upcast, (upstream.double(), upstream_lse))

    out, lse = call_api(NA[case.rank], case, low, return_lse=True)
    assert out.dtype == case.dtype and out.shape == ref_out.shape
    assert lse.dtype == (torch.float64 if case.dtype == torch.float64 else torch.float32)
    got_grads = grads((out, lse), low, (upstream, upstream_lse.to(lse.dtype)))

    eager, eager_lse, eager_grads = None, None, {}
    if case.dtype != torch.float64:  # the same math in the same dtype, by plain torch
        e = cast(low, case.dtype)
        eager, eager_lse = reference(case, e, return_lse=True)
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
    out, lse = call_api(NA[case.rank], case, t, return_lse=True)
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
        out = call_api(NA[case.rank], case, t)
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
    """create_graph=True gives exact first-order gradients (a gradient penalty elsewhere in a model
    works); differentiating them again (reverse or forward mode, torch.func.hessian) raises."""
    q, k, v = (torch.randn(1, 9, 1, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    (dq,) = torch.autograd.grad(F.na1d(q, k, v, 3).sum(), q, create_graph=True)
    (ref,) = torch.autograd.grad(na_reference(q, k, v, 3).sum(), q)
    torch.testing.assert_close(dq.detach(), ref)
    message = "first-order gradients only .* for double backward, gradgradcheck or Hessians use the unfused ops"
    with pytest.raises(RuntimeError, match=message):
        torch.autograd.grad(dq.sum(), q)
    with pytest.raises(RuntimeError, match=message):
        torch.func.hessian(lambda q: F.na1d(q, k.detach(), v.detach(), 3).sum())(q.detach())


# ---- forward-mode AD and torch.func transforms ------------------------------------------------------

FUNC_CASES = [
    Case((9,), (3,), (1,), (1,), (False,), rpb=True, additional=2, batch=1, head_dim=4, head_dim_v=4),
    Case((11,), (4,), (2,), (2,), (True,), heads=4, kv_heads=2, batch=1, head_dim=4, head_dim_v=6),
    Case((6, 7), (3, 3), (1, 2), (1, 1), (True, False), additional=2, kv_heads=1, batch=2, head_dim=4, head_dim_v=4),
    Case((3, 4, 5), (3, 3, 3), (1, 1, 1), (1, 2, 1), (False,) * 3, rpb=True, batch=1, head_dim=4, head_dim_v=4),
]
FUNC_IDS = [c.id for c in FUNC_CASES]


def _functional(fn, case, t, names):
    """fn (_natten or reference) on the inputs ``t`` as a function of the tensors ``names``
    (positional), returning (out, lse)."""

    def f(*xs):
        return fn(case, {**t, **dict(zip(names, xs))}, return_lse=True)

    return f


def _natten(case, t, **kw):
    return call_api(NA[case.rank], case, t, **kw)


def _tangents(t: dict) -> dict:
    g = torch.Generator().manual_seed(7)
    return {n: torch.randn(x.shape, generator=g, dtype=x.dtype) for n, x in t.items()}


def _present(case) -> list[str]:
    return ["q", "k", "v"] + ["rpb"] * case.rpb + ["additional_keys", "additional_values"] * bool(case.additional)


JVP_PARAMS = [pytest.param(c, w, id=f"{c.id}-{w}") for c in FUNC_CASES for w in ["all", *_present(c)]]


@pytest.mark.parametrize("case,which", JVP_PARAMS)
def test_forward_mode_ad_matches_reference_jvp(case, which):
    """The JVP of out and lse (torch.autograd.forward_ad and torch.func.jvp) equals torch.func.jvp of
    the float64 reference, with tangents on every input or on one."""
    import torch.autograd.forward_ad as fwAD

    t = {n: x.detach() for n, x in fused_inputs(case, requires_grad=False).items()}
    names = tuple(n for n in t if which in ("all", n))
    tangents = _tangents({n: t[n] for n in names})
    primals = tuple(t[n] for n in names)
    ref = torch.func.jvp(_functional(reference, case, t, names), primals, tuple(tangents.values()))[1]
    with fwAD.dual_level():
        dual = {**t, **{n: fwAD.make_dual(t[n], tangents[n]) for n in names}}
        out, lse = _natten(case, dual, return_lse=True)
        got = (fwAD.unpack_dual(out).tangent, fwAD.unpack_dual(lse).tangent)
    assert got[0] is not None and got[1] is not None, "forward-mode AD lost the tangent"
    func = torch.func.jvp(_functional(_natten, case, t, names), primals, tuple(tangents.values()))[1]
    for name, a, b, e in zip(("d out", "d lse"), got, func, ref):
        torch.testing.assert_close(a, e, msg=name)
        torch.testing.assert_close(b, e, msg=f"torch.func.jvp {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_forward_mode_ad_low_precision(dtype):
    import torch.autograd.forward_ad as fwAD

    case = FUNC_CASES[2]
    t = {n: x.detach() for n, x in fused_inputs(case, requires_grad=False).items()}
    tangents = _tangents(t)
    low = {n: x.to(dtype) for n, x in t.items()}
    ref = torch.func.jvp(
        _functional(reference, case, t, tuple(t)),
        tuple(low[n].double() for n in t),
        tuple(tangents[n].to(dtype).double() for n in t),
    )[1]
    with fwAD.dual_level():
        out, lse = _natten(case, {n: fwAD.make_dual(low[n], tangents[n].to(dtype)) for n in t}, return_lse=True)
        t_out, t_lse = fwAD.unpack_dual(out).tangent, fwAD.unpack_dual(lse).tangent
    assert t_out.dtype == dtype and t_lse.dtype == torch.float32
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(t_out.double(), ref[0], **tol)
    torch.testing.assert_close(t_lse.double(), ref[1], **tol)


@pytest.mark.parametrize("case", FUNC_CASES, ids=FUNC_IDS)
def test_torch_func_grad_vjp_jacrev(case):
    """First-order torch.func transforms on the fused op equal the same transforms of the reference."""
    t = {n: x.detach() for n, x in fused_inputs(case, requires_grad=False).items()}
    names, primals = tuple(t), tuple(t.values())
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(case.batch, *case.spatial, case.heads, case.head_dim_v, generator=g, dtype=torch.float64)
    weight_lse = torch.randn(case.batch, *case.spatial, case.heads, generator=g, dtype=torch.float64)

    def loss(fn):
        def f(*xs):
            out, lse = _functional(fn, case, t, names)(*xs)
            return (out * weight).sum() + (lse * weight_lse).sum()

        return f

    argnums = tuple(range(len(names)))
    for name, a, e in zip(
        names, torch.func.grad(loss(_natten), argnums)(*primals), torch.func.grad(loss(reference), argnums)(*primals)
    ):
        torch.testing.assert_close(a, e, msg=f"grad d{name}")

    out, vjp_fn = torch.func.vjp(_functional(_natten, case, t, names), *primals)
    ref_out, ref_vjp_fn = torch.func.vjp(_functional(reference, case, t, names), *primals)
    torch.testing.assert_close(out, ref_out)
    for name, a, e in zip(names, vjp_fn((weight, weight_lse)), ref_vjp_fn((weight, weight_lse))):
        torch.testing.assert_close(a, e, msg=f"vjp d{name}")

    # Jacobians of out with respect to q and v (jacrev = vmap over vjp; jacfwd = vmap over jvp).
    def out_of(fn):
        return lambda q, v: _functional(fn, case, t, ("q", "v"))(q, v)[0]

    ref_jac = torch.func.jacrev(out_of(reference), argnums=(0, 1))(t["q"], t["v"])
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        for name, a, e in zip(("q", "v"), transform(out_of(_natten), argnums=(0, 1))(t["q"], t["v"]), ref_jac):
            torch.testing.assert_close(a, e, msg=f"{transform.__name__} d out / d {name}")


def test_torch_func_vmap():
    """vmap over the fused op (the ops' per-sample vmap rules): the same as a loop over samples."""
    q, k, v = (torch.randn(3, 2, 9, 2, 4, dtype=torch.float64) for _ in range(3))
    out = torch.func.vmap(lambda q, k, v: F.na1d(q, k, v, 3, is_causal=True))(q, k, v)
    torch.testing.assert_close(out, torch.stack([na_reference(*x, 3, is_causal=True) for x in zip(q, k, v)]))
    out = torch.func.vmap(lambda q: F.na1d(q, k[0], v[0], 3), in_dims=0)(q)
    torch.testing.assert_close(out, torch.stack([na_reference(x, k[0], v[0], 3) for x in q]))


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
