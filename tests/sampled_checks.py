"""Checks at the sizes users run (docs/gpu.md, "Correctness at scale"): a fused case's outputs, LSE
and gradients at sampled queries against the exact windows (natten_legacy.sampled.verify), with
output and LSE gradients zero except at those queries, so the exact dq, dk, dv, drpb and
additional-KV gradients follow from the sampled windows alone.

Tolerances (natten_legacy.sampled.tolerance): 3x the error of rounding the exact result to the
tested dtype plus one eps of it (at least 32 float32 eps) at its largest magnitude; the LSE is float32.
A wrong window, tile or load is off by orders of magnitude more (perf notes v7: 50-3800x the
tolerance); correct kernels stay near 0.2-0.4 of it.
"""

from __future__ import annotations

import torch
from natten_legacy.sampled import sample_queries, summary, verify

from cases import Case
from helpers import NAMES, call_api, case_tensors


def inputs(case: Case, device: str, seed: int = 0) -> dict:
    """Fresh normal inputs in the case's dtype (drawn on the device: large problems)."""
    g = torch.Generator(device).manual_seed(seed)
    return case_tensors(
        case, lambda *shape: torch.randn(*shape, device=device, dtype=torch.float32, generator=g).to(case.dtype)
    )


def run_api(case: Case, t: dict, grad_out, grad_lse):
    """natten.functional (dispatcher, op, autograd): ``(out, lse, grads by name)``."""
    import natten.functional as F

    fn = {1: F.na1d, 2: F.na2d, 3: F.na3d}[case.rank]
    backward = grad_out is not None
    x = {n: v.detach().clone().requires_grad_(backward) for n, v in t.items()}
    out, lse = call_api(fn, case, x, return_lse=True)
    grads = {}
    if backward:
        torch.autograd.backward((out, lse), (grad_out, grad_lse))
        grads = {n: v.grad for n, v in x.items()}
    return out.detach(), lse.detach(), grads


def launchers(fwd_config=(), bwd_config=()):
    """A runner through the Triton launchers with explicit configs (``[]``: the default)."""

    def run(case: Case, t: dict, grad_out, grad_lse):
        from natten_kernels.triton.launch_backward import na_fused_backward
        from natten_kernels.triton.launch_forward import na_fused_forward

        scale = case.head_dim**-0.5
        args = [t.get(n) for n in NAMES]
        geo = (list(case.kernel_size), list(case.dilation), list(case.stride), list(case.is_causal))
        out, lse = na_fused_forward(*args, *geo, scale, list(fwd_config))
        grads = {}
        if grad_out is not None:
            res = na_fused_backward(
                grad_out, t["q"], t["k"], t["v"], out, lse, grad_lse, *args[3:], *geo, scale, list(bwd_config)
            )
            grads = {n: g for n, g in zip(NAMES, res) if n in t}
        return out, lse, grads

    return run


def check_case(
    case: Case, device: str, runner=run_api, *, backward: bool = True, seed: int = 0, per_case: int = 1, extra: int = 4
) -> list:
    """Run ``case`` through ``runner`` on fresh inputs and compare with the exact windows of sampled
    queries (corners, edges, interior, random); raises ``AssertionError`` naming every failing result."""
    t = inputs(case, device, seed)
    qs = sample_queries(case.spatial, case.kernel_size, case.dilation, per_case=per_case, extra=extra, seed=seed)
    reports = verify(lambda go, gl: runner(case, t, go, gl), t, qs, *case.geometry, backward=backward, seed=seed)
    bad = [r for r in reports if not r.ok]
    assert not bad, f"{case.id}: error / tolerance {summary(reports)}\n" + "\n".join(str(r) for r in bad)
    return reports
