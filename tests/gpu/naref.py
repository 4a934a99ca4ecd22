"""Shared by the Triton tests (interpreter on CPU and the GPU suite): run one Case through the Triton
launchers (or the public API) and compare output, LSE and every gradient with the float64 reference
on upcast inputs (docs/gpu.md, "Correctness at scale")."""

from __future__ import annotations

import torch
from natten_legacy.testing import assert_close_to_reference

from cases import Case
from helpers import case_tensors
from helpers import reference as na_reference_of
from sampled_checks import launchers, run_api  # noqa: F401  (run_api: the API runner)


def make_inputs(case: Case, device: str, dtype: torch.dtype, seed: int = 0) -> dict:
    """Inputs drawn in float64 on CPU (fresh per seed) and cast to ``dtype`` on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    return case_tensors(
        case, lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    )


def reference(case: Case, t: dict, upstream, upstream_lse, dtype=torch.float64):
    """(out, lse, grads) of the reference on ``t`` cast to ``dtype`` (float64: the oracle; the low
    dtype: the same math in plain torch, the 'eager' error scale)."""
    x = {n: v.detach().to(dtype).requires_grad_(True) for n, v in t.items()}
    out, lse = na_reference_of(case, x, return_lse=True)
    g = torch.autograd.grad((out, lse), list(x.values()), (upstream.to(out.dtype), upstream_lse.to(lse.dtype)))
    return out.detach(), lse.detach(), dict(zip(x, g))


def run_launchers(case: Case, t: dict, upstream, upstream_lse, fwd_config=(), bwd_config=()):
    """Through the Triton launchers with explicit configs."""
    return launchers(fwd_config, bwd_config)(case, t, upstream, upstream_lse)


def check(case: Case, device: str, runner, seed: int = 0, **kw) -> None:
    dtype = case.dtype
    t = make_inputs(case, device, dtype, seed)
    up, up_lse = upstreams(case, t, device, dtype, seed)
    ref_out, ref_lse, ref_g = reference(case, t, up, up_lse)
    eager_out, eager_lse, eager_g = reference(case, t, up, up_lse, dtype=dtype)
    out, lse, grads = runner(case, t, up.to(dtype), up_lse.float(), **kw)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    assert_close_to_reference(out, ref_out, eager=eager_out, name="out")
    assert_close_to_reference(lse, ref_lse, eager=eager_lse.float(), name="lse")
    for name, rg in ref_g.items():
        assert grads[name].dtype == t[name].dtype and grads[name].shape == t[name].shape, name
        assert_close_to_reference(grads[name], rg, eager=eager_g[name], name=f"d{name}")


def upstreams(case, t, device, dtype, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    b, s = case.batch, case.spatial
    up = torch.randn(b, *s, case.heads, case.head_dim_v, generator=gen, dtype=torch.float64).to(dtype)
    up_lse = torch.randn(b, *s, case.heads, generator=gen, dtype=torch.float64).float()
    return up.to(device), up_lse.to(device)
