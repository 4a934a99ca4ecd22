"""natten_legacy.sampled: the exact-window oracle on sampled queries equals the dense reference (outputs,
LSE, every gradient), covers every border case, and its tolerance catches what a wrong kernel does."""

from __future__ import annotations

import itertools

import pytest
import torch
from natten_legacy.reference import na_reference
from natten_legacy.sampled import check_sampled, flat_index, sample_queries, sampled_reference, tolerance, verify

CASES = [  # spatial, kernel, dilation, stride, causal, rpb, additional, heads, kv heads
    ((13,), (5,), (2,), (2,), (True,), False, 3, 4, 2),
    ((9, 11), (3, 5), (2, 1), (1, 2), (False, True), False, 0, 2, 2),
    ((9, 11), (3, 5), (2, 1), (1, 1), (False, False), True, 2, 4, 1),
    ((5, 6, 7), (3, 3, 5), (1, 2, 1), (2, 1, 3), (True, False, False), False, 2, 2, 1),
    ((6, 7, 8), (3, 3, 3), (2, 1, 2), (1, 3, 1), (False, False, False), True, 0, 2, 2),
]


def _inputs(spatial, kernel, rpb, add, hq, hkv, B=2, D=6, Dv=5):
    f = dict(dtype=torch.float64)
    t = {
        "q": torch.randn(B, *spatial, hq, D, **f),
        "k": torch.randn(B, *spatial, hkv, D, **f),
        "v": torch.randn(B, *spatial, hkv, Dv, **f),
    }
    if rpb:
        t["rpb"] = torch.randn(hq, *(2 * x - 1 for x in kernel), **f)
    if add:
        t["additional_keys"] = torch.randn(B, add, hkv, D, **f)
        t["additional_values"] = torch.randn(B, add, hkv, Dv, **f)
    return t


@pytest.mark.parametrize("case", CASES, ids=[f"{len(c[0])}d-{i}" for i, c in enumerate(CASES)])
def test_sampled_reference_equals_the_dense_reference(case):
    spatial, kernel, dil, stride, causal, rpb, add, hq, hkv = case
    t = _inputs(spatial, kernel, rpb, add, hq, hkv)
    qs = sample_queries(spatial, kernel, dil)
    idx = flat_index(spatial, qs)
    B, M, Dv = 2, qs.shape[0], t["v"].shape[-1]
    go, gl = torch.randn(B, M, hq, Dv, dtype=torch.float64), torch.randn(B, M, hq, dtype=torch.float64)
    opt = {n: t.get(n) for n in ("rpb", "additional_keys", "additional_values")}
    out, lse, grads = sampled_reference(
        t["q"], t["k"], t["v"], qs, kernel, dil, stride, causal, **opt, grad_out=go, grad_lse=gl
    )
    x = {n: v.clone().requires_grad_(True) for n, v in t.items()}
    xopt = {n: x.get(n) for n in opt}
    ro, rl = na_reference(x["q"], x["k"], x["v"], kernel, dil, stride, causal, **xopt, return_lse=True)
    GO = torch.zeros(B, ro[0, ..., 0, 0].numel(), hq, Dv, dtype=torch.float64)
    GO[:, idx] = go
    GL = torch.zeros(B, GO.shape[1], hq, dtype=torch.float64)
    GL[:, idx] = gl
    torch.autograd.backward([ro, rl], [GO.reshape(ro.shape), GL.reshape(rl.shape)])
    torch.testing.assert_close(out, ro.reshape(B, -1, hq, Dv)[:, idx], rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, rl.reshape(B, -1, hq)[:, idx], rtol=0, atol=1e-12)
    assert set(grads) == set(x)
    for name in x:
        torch.testing.assert_close(grads[name], x[name].grad, rtol=0, atol=1e-12, msg=name)


def test_sample_queries_cover_corners_edges_and_interior():
    spatial, kernel = (40, 50, 60), (5, 7, 9)
    qs = sample_queries(spatial, kernel, extra=0)
    assert qs.dtype == torch.long and qs.shape[1] == 3
    assert (qs >= 0).all() and (qs < torch.tensor(spatial)).all()
    assert [0, 0, 0] in qs.tolist() and [39, 49, 59] in qs.tolist()

    def zone(x, L, k):
        return 0 if x < k else (2 if x >= L - k else 1)

    zones = {tuple(zone(x, L, k) for x, L, k in zip(row, spatial, kernel)) for row in qs.tolist()}
    assert zones == set(itertools.product(range(3), repeat=3))  # every corner, edge, face and the interior


def test_tolerance_is_tied_to_the_dtype():
    exact = torch.linspace(-2, 3, 1000, dtype=torch.float64)
    atol16, _ = tolerance(exact, torch.bfloat16)
    atol32, _ = tolerance(exact, torch.float32)
    ulp = 2.0**-6  # bf16 spacing at the largest value, 3
    assert 1.5 * ulp < atol16 <= 3.5 * ulp  # 3 x half an ulp + eps x 3
    assert atol32 < 1e-4
    assert check_sampled(exact.to(torch.bfloat16), exact, torch.bfloat16).ok  # rounding passes
    wrong = exact.clone()
    wrong[500] += 4 * ulp  # one element off by 4 ulps of the max: fails
    rep = check_sampled(wrong.to(torch.bfloat16), exact, torch.bfloat16)
    assert not rep.ok and rep.first_bad == [(500,)]
    nan = exact.clone()
    nan[3] = float("nan")
    assert not check_sampled(nan.float(), exact, torch.float32).ok


def test_verify_flags_a_wrong_window():
    """An implementation whose window is shifted by one key on the last axis fails verify."""
    spatial, kernel = (12, 14), (5, 5)
    t = _inputs(spatial, kernel, False, 0, 2, 2)
    qs = sample_queries(spatial, kernel)

    def run_ok(go, gl):
        x = {n: v.clone().requires_grad_(True) for n, v in t.items()}
        out, lse = na_reference(x["q"], x["k"], x["v"], kernel, return_lse=True)
        torch.autograd.backward([out, lse], [go, gl])
        return out, lse, {n: v.grad for n, v in x.items()}

    def run_shifted(go, gl):
        _out, _lse, g = run_ok(go, gl)
        k2 = t["k"].roll(1, dims=2)
        out2, lse2 = na_reference(t["q"], k2, t["v"], kernel, return_lse=True)
        return out2, lse2, g

    assert all(r.ok for r in verify(run_ok, t, qs, kernel))
    bad = [r.name for r in verify(run_shifted, t, qs, kernel) if not r.ok]
    assert "out" in bad and "lse" in bad


def test_float32_floor_grows_with_the_keys_summed():
    """The float32 floor is max(32, sqrt(terms)) eps32 at the largest magnitude: a 10^4-key window
    allows 100 eps32, a small one 32."""
    from natten_legacy.sampled import tolerance

    exact = torch.tensor([0.5, -2.0], dtype=torch.float64)
    eps32 = torch.finfo(torch.float32).eps
    small, _ = tolerance(exact, torch.float32, terms=9)
    large, _ = tolerance(exact, torch.float32, terms=10_000)
    assert small == 3 * 0 + 32 * eps32 * 2.0 and large == 100 * eps32 * 2.0
