"""Input construction shared by the test files (comparison itself lives in natten_legacy.testing)."""

from __future__ import annotations

import torch

from cases import Case


def fused_inputs(case: Case, device: str = "cpu", requires_grad: bool = True) -> dict:
    """Heads-last float64 master inputs for a fused case."""
    b, s = case.batch, case.spatial
    g = dict(dtype=torch.float64, device=device)
    t = {
        "q": torch.randn(b, *s, case.heads, case.head_dim, **g),
        "k": torch.randn(b, *s, case.kv_heads, case.head_dim, **g),
        "v": torch.randn(b, *s, case.kv_heads, case.head_dim_v, **g),
    }
    if case.rpb:
        t["rpb"] = torch.randn(case.heads, *(2 * k - 1 for k in case.kernel_size), **g)
    if case.additional:
        t["additional_keys"] = torch.randn(b, case.additional, case.kv_heads, case.head_dim, **g)
        t["additional_values"] = torch.randn(b, case.additional, case.kv_heads, case.head_dim_v, **g)
    for x in t.values():
        x.requires_grad_(requires_grad)
    return t


def cast(inputs: dict, dtype: torch.dtype) -> dict:
    """Detached leaves in ``dtype``, keeping each input's requires_grad."""
    out = {}
    for name, x in inputs.items():
        out[name] = x.detach().to(dtype).requires_grad_(x.requires_grad)
    return out


def grads(outputs, inputs: dict, upstream) -> dict:
    tensors = [inputs[n] for n in inputs]
    gs = torch.autograd.grad(outputs, tensors, upstream, allow_unused=True)
    return dict(zip(inputs, gs))
