"""FLOP formulas of every ``natten::`` op: the one place they live.

Counting rules (see docs/flops.md):

* The unit here is the multiply-add (MAC). ``torch.utils.flop_counter.FlopCounterMode`` reports
  ``2 * MACs`` (its convention for matmuls); fvcore reports MACs ("one fused multiply-add = one flop").
* Only the matmul-like work is counted: for every *attended* (query, key) pair, ``D`` MACs for the
  logit ``q . k`` and ``Dv`` MACs for the ``p * v`` accumulation. Softmax, scale, the rpb add and the
  masking are not counted (torch's own SDPA formulas make the same choice).
* Attended pairs are counted exactly: per axis, non-causal queries always see ``kernel_size`` keys
  (the window is shifted at borders, never truncated), causal queries see the keys of the window rule
  (docs/semantics.md) up to themselves, counted by :func:`natten_kernels.window.axis_pairs`. The
  neighborhood is the Cartesian product over axes, so the pair count of a problem is the product of
  its per-axis counts. Additional KV adds ``N * N_add`` pairs (no mask) per batch and query head.
* Backward ops count their own work. The fused backward recomputes the logits from ``lse`` (it is
  given ``out`` and ``lse``, not the attention weights), then needs ``dP = dO v``, ``dV = P^T dO``,
  ``dQ = dS k`` and ``dK = dS^T q``: ``3 D + 2 Dv`` MACs per pair, i.e. 2.5x the forward when
  ``D == Dv`` (the GPU benchmarks' convention; torch counts SDPA backward the same way). The unfused
  backward ops get the attention weights, so they count two products each.

:func:`macs` / :func:`flops` take an op's arguments in schema order, with tensors given as tensors or
shapes (``torch.Size``/tuples, ``None`` for absent optionals), so the same formulas serve
FlopCounterMode, the fvcore handles of ``natten_flops`` and the profiler; each ``*_macs`` function
takes them bound by name (natten_kernels.ops.spec, where every op's formula is listed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from natten_kernels.window import axis_pairs

__all__ = [
    "axis_pairs",
    "neighborhood_pairs",
    "macs",
    "flops",
    "flop_formula",
]

Shape = Sequence[int]


def neighborhood_pairs(
    spatial: Shape,
    kernel_size: Shape,
    dilation: Shape,
    stride: Shape,
    is_causal: Sequence[bool],
    query_box: tuple[Shape, Shape] | None = None,
) -> int:
    """Attended (query, key) pairs of one batch element and head: the product of :func:`axis_pairs`
    (``query_box = (offset, extent)``: the queries are that box of the key grid ``spatial``)."""
    pairs = 1
    for x, axis in enumerate(zip(spatial, kernel_size, dilation, stride, is_causal)):
        queries = None if query_box is None else (query_box[0][x], query_box[0][x] + query_box[1][x])
        pairs *= axis_pairs(*axis, queries)
    return pairs


def _shape(t) -> tuple[int, ...]:
    """A tensor's shape, or the shape given in its place."""
    return tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)


def _spatial(shape: tuple[int, ...], first: int, rank: int) -> tuple[int, ...]:
    return shape[first : first + rank]


# Heads-last fused ops: q [B, *S, Hq, D], v [B, *S, Hkv, Dv], additional KV [B, N_add, Hkv, D(v)].


def _fused_pairs(a) -> int:
    """Attended pairs over the whole batch and all query heads, additional KV included."""
    q = _shape(a.q)
    rank = len(a.kernel_size)
    spatial = _spatial(q, 1, rank)
    offset = tuple(getattr(a, "query_offset", None) or ())  # queries: a box of the key grid there
    grid = _spatial(_shape(a.k), 1, rank) if offset else spatial
    box = (offset, spatial) if offset else None
    per_head = neighborhood_pairs(grid, a.kernel_size, a.dilation, a.stride, a.is_causal, box)
    if a.additional_keys is not None:
        per_head += math.prod(spatial) * _shape(a.additional_keys)[1]
    return q[0] * q[-2] * per_head


def fused_forward_macs(a) -> int:
    """``D + Dv`` MACs per attended pair (``q . k`` and ``p * v``)."""
    return _fused_pairs(a) * (_shape(a.q)[-1] + _shape(a.v)[-1])


def fused_backward_macs(a) -> int:
    """``3 D + 2 Dv`` MACs per attended pair: logit recompute, dP, dV, dQ, dK."""
    return _fused_pairs(a) * (3 * _shape(a.q)[-1] + 2 * _shape(a.v)[-1])


# Heads-first unfused ops: q, k [B, H, *S, D], v [B, H, *S, Dv], attn [B, H, *S, K]. Their additional
# KV are dense matmuls in the autograd layer, counted by the matmul formulas of each tool.


def _unfused_pairs(ref, a) -> int:
    ref = _shape(ref)
    spatial = _spatial(ref, 2, len(a.kernel_size))
    return ref[0] * ref[1] * neighborhood_pairs(spatial, a.kernel_size, a.dilation, a.stride, a.is_causal)


def qk_forward_macs(a) -> int:
    """``D`` MACs per attended pair."""
    return _unfused_pairs(a.q, a) * _shape(a.q)[-1]


def qk_backward_macs(a) -> int:
    """``2 D`` MACs per attended pair: ``dq`` and ``dk``."""
    return 2 * qk_forward_macs(a)


def av_forward_macs(a) -> int:
    """``Dv`` MACs per attended pair."""
    return _unfused_pairs(a.v, a) * _shape(a.v)[-1]


def av_backward_macs(a) -> int:
    """``2 Dv`` MACs per attended pair: ``grad_attn`` and ``dv``."""
    return 2 * av_forward_macs(a)


def macs(op: str, *args, **kwargs) -> int:
    """Multiply-adds of ``torch.ops.natten.<op>`` called with these arguments (tensors or shapes)."""
    from natten_kernels.ops.spec import macs as spec_macs

    return spec_macs(op, *args, **kwargs)


def flops(op: str, *args, **kwargs) -> int:
    """FLOPs (``2 * MACs``, FlopCounterMode's convention) of ``torch.ops.natten.<op>``."""
    return 2 * macs(op, *args, **kwargs)


def flop_formula(name: str):
    """FlopCounterMode's formula for an op with the spec of ``name`` (it passes shapes in place of
    tensors and the output shape as ``out_shape``)."""

    def formula(*args, out_shape=None, **kwargs) -> int:
        return 2 * macs(name, *args, **kwargs)

    formula.__name__ = f"{name}_flop"
    return formula
