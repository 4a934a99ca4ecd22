"""Describe a validated call as a Problem and ask natten_kernels' dispatcher for a backend."""

from __future__ import annotations

import torch
from natten_kernels import dispatcher
from natten_kernels.backends import BACKENDS, Backend, Problem

from natten import context
from natten.functional.validation import NAParams


def _is_dual(t: torch.Tensor | None) -> bool:
    if t is None:
        return False
    return torch.autograd.forward_ad.unpack_dual(t).tangent is not None


def problem_for(
    family: str,
    params: NAParams,
    ref: torch.Tensor,
    head_dim: int,
    head_dim_v: int,
    tensors: tuple,
    *,
    rpb: bool = False,
    additional_kv: bool = False,
    gqa: bool = False,
) -> Problem:
    features = set()
    if params.any_causal:
        features.add("causal")
    if any(d > 1 for d in params.dilation):
        features.add("dilation")
    if any(s > 1 for s in params.stride):
        features.add("stride")
    if rpb:
        features.add("rpb")
    if additional_kv:
        features.add("additional_kv")
    if gqa:
        features.add("gqa")
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        features.add("backward")
        if context.deterministic():
            features.add("deterministic_backward")
    if not torch.compiler.is_compiling() and any(_is_dual(t) for t in present):
        features.add("forward_ad")
    return Problem(
        family=family,
        device=ref.device.type,
        dtype=ref.dtype,
        rank=params.rank,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        features=frozenset(features),
    )


def wants_forward_ad(problem: Problem) -> bool:
    """Whether the call must go through the autograd Functions that define ``jvp``: a dual tensor
    (torch.autograd.forward_ad) or a torch.func transform (its wrapped tensors are not dual tensors to
    ``unpack_dual``, and ``torch.func.jvp`` / ``jacfwd`` need the jvp rule)."""
    return "forward_ad" in problem.features or torch._C._are_functorch_transforms_active()


def backends_for(problem: Problem, first: bool = False) -> list[Backend]:
    """The backends that can run ``problem`` (only the default with ``first``), the default first:
    dispatch order, with the backend of ``natten.use_backend`` moved first (or alone, when forced) for
    the families it has."""
    order = BACKENDS
    name, forced = context.preferred_backend()
    chosen = [b for b in BACKENDS if b.name in (name, f"{name}-{problem.device}") and problem.family in b.families]
    if chosen:
        order = chosen if forced else chosen + [b for b in BACKENDS if b not in chosen]
    return dispatcher.candidates(problem, context.disabled_backend_kinds(), order, first)


def select_backend(problem: Problem) -> Backend:
    return backends_for(problem, first=True)[0]
