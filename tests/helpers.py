"""Inputs and the calls on them shared by the test files (comparison itself lives in natten_legacy.testing)."""

from __future__ import annotations

import torch
from natten_legacy.reference import na_reference

from cases import Case

NAMES = ("q", "k", "v", "rpb", "additional_keys", "additional_values")


def case_tensors(case: Case, rnd) -> dict:
    """A fused case's heads-last inputs by name (in ``NAMES`` order), each drawn by ``rnd(*shape)``."""
    b, s = case.batch, case.spatial
    t = {
        "q": rnd(b, *s, case.heads, case.head_dim),
        "k": rnd(b, *s, case.kv_heads, case.head_dim),
        "v": rnd(b, *s, case.kv_heads, case.head_dim_v),
    }
    if case.rpb:
        t["rpb"] = rnd(case.heads, *(2 * k - 1 for k in case.kernel_size))
    if case.additional:
        t["additional_keys"] = rnd(b, case.additional, case.kv_heads, case.head_dim)
        t["additional_values"] = rnd(b, case.additional, case.kv_heads, case.head_dim_v)
    return t


def fused_inputs(case: Case, device: str = "cpu", requires_grad: bool = True) -> dict:
    """Heads-last float64 master inputs for a fused case."""
    return case_tensors(
        case, lambda *shape: torch.randn(*shape, dtype=torch.float64, device=device).requires_grad_(requires_grad)
    )


def reference(case: Case, t: dict, **kw):
    """``natten_legacy``'s fused reference on inputs by name (absent or None: not given)."""
    return na_reference(
        t["q"],
        t["k"],
        t["v"],
        *case.geometry,
        rpb=t.get("rpb"),
        additional_keys=t.get("additional_keys"),
        additional_values=t.get("additional_values"),
        **kw,
    )


def call_api(fn, case: Case, t: dict, **kw):
    """``fn`` (natten.functional.na{1,2,3}d or one with its signature) on inputs by name."""
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
