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

Every ``*_macs`` function takes the op's arguments in schema order, with tensors given as tensors or
shapes (``torch.Size``/tuples, ``None`` for absent optionals), so the same functions serve
FlopCounterMode, the fvcore handles of ``natten_flops`` and the profiler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from natten_kernels.ops.names import OPS
from natten_kernels.window import axis_pairs

__all__ = [
    "axis_pairs",
    "neighborhood_pairs",
    "macs",
    "flops",
    "MAC_FORMULAS",
    "register_flop_formulas",
]

Shape = Sequence[int]


def neighborhood_pairs(
    spatial: Shape, kernel_size: Shape, dilation: Shape, stride: Shape, is_causal: Sequence[bool]
) -> int:
    """Attended (query, key) pairs of one batch element and head: the product of :func:`axis_pairs`."""
    pairs = 1
    for axis in zip(spatial, kernel_size, dilation, stride, is_causal):
        pairs *= axis_pairs(*axis)
    return pairs


def _shape(t) -> tuple[int, ...]:
    """A tensor's shape, or the shape given in its place."""
    return tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)


def _spatial(shape: tuple[int, ...], first: int, rank: int) -> tuple[int, ...]:
    return shape[first : first + rank]


# Heads-last fused ops: q [B, *S, Hq, D], v [B, *S, Hkv, Dv], additional KV [B, N_add, Hkv, D(v)].


def _fused_pairs(q, additional_keys, kernel_size, dilation, stride, is_causal) -> int:
    """Attended pairs over the whole batch and all query heads, additional KV included."""
    q = _shape(q)
    spatial = _spatial(q, 1, len(kernel_size))
    per_head = neighborhood_pairs(spatial, kernel_size, dilation, stride, is_causal)
    if additional_keys is not None:
        per_head += math.prod(spatial) * _shape(additional_keys)[1]
    return q[0] * q[-2] * per_head


def na_fused_forward_macs(
    q, k, v, rpb, additional_keys, additional_values, kernel_size, dilation, stride, is_causal, scale=None, *_config
) -> int:
    """``D + Dv`` MACs per attended pair (``q . k`` and ``p * v``)."""
    d, dv = _shape(q)[-1], _shape(v)[-1]
    return _fused_pairs(q, additional_keys, kernel_size, dilation, stride, is_causal) * (d + dv)


def na_fused_backward_macs(
    grad_out,
    q,
    k,
    v,
    out,
    lse,
    grad_lse,
    rpb,
    additional_keys,
    additional_values,
    kernel_size,
    dilation,
    stride,
    is_causal,
    scale=None,
    config=None,
) -> int:
    """``3 D + 2 Dv`` MACs per attended pair: logit recompute, dP, dV, dQ, dK."""
    d, dv = _shape(q)[-1], _shape(v)[-1]
    return _fused_pairs(q, additional_keys, kernel_size, dilation, stride, is_causal) * (3 * d + 2 * dv)


# Heads-first unfused ops: q, k [B, H, *S, D], v [B, H, *S, Dv], attn [B, H, *S, K]. Their additional
# KV are dense matmuls in the autograd layer, counted by the matmul formulas of each tool.


def _unfused_pairs(ref, kernel_size, dilation, stride, is_causal) -> int:
    ref = _shape(ref)
    spatial = _spatial(ref, 2, len(kernel_size))
    return ref[0] * ref[1] * neighborhood_pairs(spatial, kernel_size, dilation, stride, is_causal)


def na_qk_forward_macs(q, k, rpb, kernel_size, dilation, stride, is_causal, config=()) -> int:
    """``D`` MACs per attended pair."""
    return _unfused_pairs(q, kernel_size, dilation, stride, is_causal) * _shape(q)[-1]


def na_qk_backward_macs(grad_attn, q, k, rpb, kernel_size, dilation, stride, is_causal, config=()) -> int:
    """``2 D`` MACs per attended pair: ``dq`` and ``dk``."""
    return 2 * na_qk_forward_macs(q, k, rpb, kernel_size, dilation, stride, is_causal)


def na_av_forward_macs(attn, v, kernel_size, dilation, stride, is_causal, config=()) -> int:
    """``Dv`` MACs per attended pair."""
    return _unfused_pairs(v, kernel_size, dilation, stride, is_causal) * _shape(v)[-1]


def na_av_backward_macs(grad_out, attn, v, kernel_size, dilation, stride, is_causal, config=()) -> int:
    """``2 Dv`` MACs per attended pair: ``grad_attn`` and ``dv``."""
    return 2 * na_av_forward_macs(attn, v, kernel_size, dilation, stride, is_causal)


MAC_FORMULAS: dict[str, Callable[..., int]] = {
    "na_fused_forward": na_fused_forward_macs,
    "na_fused_backward": na_fused_backward_macs,
    "na_qk_forward": na_qk_forward_macs,
    "na_qk_backward": na_qk_backward_macs,
    "na_av_forward": na_av_forward_macs,
    "na_av_backward": na_av_backward_macs,
}
assert set(MAC_FORMULAS) == set(OPS), "every op needs exactly one FLOP formula"


def macs(op: str, *args, **kwargs) -> int:
    """Multiply-adds of ``torch.ops.natten.<op>`` called with these arguments (tensors or shapes)."""
    return MAC_FORMULAS[op](*args, **kwargs)


def flops(op: str, *args, **kwargs) -> int:
    """FLOPs (``2 * MACs``, FlopCounterMode's convention) of ``torch.ops.natten.<op>``."""
    return 2 * macs(op, *args, **kwargs)


def _flop_formula(formula):
    # FlopCounterMode passes shapes in place of tensors and the output shape as ``out_shape``.
    def flop_formula(*args, out_shape=None, **kwargs) -> int:
        return 2 * formula(*args, **kwargs)

    flop_formula.__name__ = formula.__name__.replace("_macs", "_flop")
    return flop_formula


def register_flop_formulas() -> None:
    """Register every op's formula with ``torch.utils.flop_counter`` (idempotent).

    Needs the ``torch.ops.natten`` namespace, i.e. the compiled library loaded.
    """
    from torch.utils import flop_counter

    for name, formula in MAC_FORMULAS.items():
        op = getattr(torch.ops.natten, name)
        if op not in flop_counter.flop_registry:  # a second call (or a reload) must not raise
            flop_counter.register_flop_formula(op)(_flop_formula(formula))
