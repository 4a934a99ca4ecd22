"""Fused neighborhood attention ``na1d/na2d/na3d``: softmax(scale * q k^T + rpb) v, heads-last."""

from __future__ import annotations

import dataclasses
import math

import torch
from natten_kernels.backends import TuningInfo
from torch.nn import functional as F

from natten import autotuner, context
from natten.autograd.fused import FusedNeighborhoodAttention, FusedNeighborhoodAttentionForwardAD, problem_key
from natten.functional.dispatch import backends_for, problem_for, wants_forward_ad
from natten.functional.validation import (
    BoolOrTuple,
    IntOrTuple,
    causal_alias,
    check_bool,
    check_fused,
    normalize_params,
)


def _na(
    rank: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple,
    is_causal: BoolOrTuple,
    rpb: torch.Tensor | None,
    scale: float | None,
    additional_keys: torch.Tensor | None,
    additional_values: torch.Tensor | None,
    stride: IntOrTuple,
    return_lse: bool,
    query_offset: tuple[int, ...] | None = None,
):
    """``query_offset`` (internal; natten.distributed): the query is the box of its shape at that offset
    of the key grid, and only its rows are computed (by the kernels of backends with the "query_box"
    feature; for the others, the query is zero-padded to the grid and the box cut from the result)."""
    params = normalize_params(rank, kernel_size, dilation, stride, is_causal)
    return_lse = check_bool(return_lse, "return_lse")
    tensors = (query, key, value, rpb, additional_keys, additional_values)
    shapes = check_fused(*tensors[:3], params, rpb, scale, *tensors[4:], query_offset)
    problem = problem_for(
        "fused",
        params,
        query,
        shapes.head_dim,
        shapes.head_dim_v,
        tensors,
        rpb=rpb is not None,
        additional_kv=additional_keys is not None,
        gqa=shapes.kv_heads != shapes.heads,
    )
    op_args = (*params.as_op_args(), shapes.scale)
    if query_offset is not None:
        problem = _query_box(problem)
        if problem is None:
            return _padded_box(rank, tensors, params, scale, return_lse, query_offset)
    box = list(query_offset or ())  # the op's query_offset ([]: queries and keys share the grid)
    info = _tuning_info(query, shapes)
    backend, forward_config, backward_configs = _choose(
        backends_for(problem, first=not _tuning() or bool(box)), info, tensors, op_args, box=bool(box)
    )
    if wants_forward_ad(problem):
        fn = FusedNeighborhoodAttentionForwardAD
        out, lse = fn.apply(*tensors, *op_args, forward_config, box, backward_configs, backend)
    elif _needs_function(problem):
        out, lse = FusedNeighborhoodAttention.apply(*tensors, *op_args, forward_config, box, backward_configs, backend)
    else:  # inference: the op alone, without an empty query_offset to parse on every call
        out, lse = backend.op("na_fused_forward")(*tensors, *op_args, forward_config, *([box] if box else []))
    return (out, lse) if return_lse else out


def _query_box(problem):
    """``problem`` needing the "query_box" feature, where the default backend has it and no forward-mode
    AD is asked for (its rule runs the unfused ops on one grid); else None."""
    if wants_forward_ad(problem) or "query_box" not in backends_for(problem, first=True)[0].features:
        return None
    return dataclasses.replace(problem, features=problem.features | {"query_box"})


def _padded_box(rank, tensors, params, scale, return_lse, query_offset):
    """The query box computed on the whole key grid: the query zero-padded there, the box cut out."""
    query, key = tensors[0], tensors[1]
    grid, spatial = key.shape[1:-2], query.shape[1:-2]
    pad = []
    for offset, n, m in reversed(list(zip(query_offset, spatial, grid))):
        pad += [offset, m - offset - n]
    full = (F.pad(query, [0, 0, 0, 0, *pad]), *tensors[1:])
    out, lse = _na(rank, *full[:3], *params.as_op_args()[:2], params.is_causal, full[3], scale, *full[4:],
                   params.stride, True)  # fmt: skip
    box = (slice(None), *(slice(o, o + n) for o, n in zip(query_offset, spatial)))
    return (out[box], lse[box]) if return_lse else out[box]


def _needs_function(problem) -> bool:
    """Whether the call goes through the autograd Function: for gradients and torch.jit tracing
    (fvcore finds the Function's node); forward-mode AD and torch.func transforms take the Function
    with a jvp rule (``wants_forward_ad``). Otherwise the op alone runs, which spares an
    ``inspect.signature`` bind per call in ``Function.apply`` (tens of microseconds of host time, as
    much as a small problem's kernel)."""
    return "backward" in problem.features or torch._C._get_tracing_state() is not None


def _tuning_info(query, shapes) -> TuningInfo:
    return TuningInfo(
        batch=query.shape[0],
        heads=shapes.heads,
        kv_heads=shapes.kv_heads,
        tokens=math.prod(query.shape[1:-2]),
        head_dim=shapes.head_dim,
        kv_parallel=context.is_kv_parallelism_in_fused_na_enabled(),
        memory_preference=context.get_memory_usage_preference(),
    )


def _tuning() -> bool:
    return context.is_autotuner_enabled_for_forward() and not torch.compiler.is_compiling()


def _choose(backends, info, tensors, op_args, box: bool = False):
    """``(backend, forward config, backward configs)``: the first backend that fits with its default
    forward config; with the forward autotuner on, the fastest (backend, config) pair among the first
    backend and the others that fit and allow it (``Backend.autotune``), each with its candidate
    configs (the default and the best-rated few, or all in thorough mode), timed once per problem.
    The backward's candidates are the chosen backend's (one unless the backward is autotuned). A query
    box (``box``) takes the defaults: the autotuner times whole-grid calls."""
    tune = _tuning() and not box
    if tune:
        backends = [backends[0], *(b for b in backends[1:] if b.autotune)]
    else:
        backends = backends[:1]
    limit = None if context.is_autotuner_thorough_for_forward() else context.THOROUGH_CANDIDATES
    pairs = [(b, list(c)) for b in backends for c in b.forward_configs(info)[:limit]]
    backend, config = pairs[0]
    if tune and len(pairs) > 1:
        steps = context.get_autotuner_steps()
        backend, config = autotuner.tune(
            ("forward", *problem_key(tensors, op_args, [[b.name, *c] for b, c in pairs])),
            pairs,
            lambda pair: pair[0].op("na_fused_forward")(*tensors, *op_args, pair[1]),
            tensors[0].device,
            steps["warmup"][0],
            steps["steps"][0],
        )
    backward = backend.backward_configs(info)
    if not context.is_autotuner_thorough_for_backward():
        backward = backward[: context.THOROUGH_CANDIDATES]
    if box or torch.compiler.is_compiling() or not context.is_autotuner_enabled_for_backward():
        backward = backward[:1]
    return backend, config, tuple(tuple(c) for c in backward)


_DOC = """{n}-D fused neighborhood attention.

    Args:
        query: ``[batch, {axes}, heads, head_dim]`` (heads-last).
        key: ``[batch, {axes}, kv_heads, head_dim]``; ``kv_heads`` must divide ``heads`` (GQA/MQA).
        value: ``[batch, {axes}, kv_heads, head_dim_v]``.
        kernel_size: neighborhood size, an int or one per axis (>= 2, ``kernel_size * dilation <= size``).
        dilation: an int or one per axis (>= 1).
        is_causal: a bool or one per axis.
        rpb: relative positional bias ``[heads, {rpb}]``; odd kernels, no causal axis.
        scale: logit scale, any finite float (0 and negative values included); ``None`` means
            ``head_dim ** -0.5``. NaN, inf and values beyond the float range of the dtype the kernels
            compute in (float32, float64 for float64 inputs) raise ValueError; bools and non-numbers
            raise TypeError.
        additional_keys / additional_values: ``[batch, num_additional, kv_heads, head_dim(_v)]``, extra
            tokens every query also attends to (no mask, no bias).
        stride: (keyword) an int or one per axis, ``1 <= stride <= kernel_size``; queries in blocks of
            ``stride`` share one neighborhood (``stride == kernel_size`` is blocked attention).
        return_lse: (keyword) a bool: also return the logsumexp of the logits, ``[batch, {axes}, heads]``
            in float32 (float64 for float64 inputs).

    A zero batch gives an empty result; any other zero-size axis raises ValueError. Nested tensors are
    not supported (TypeError): use the unfused ops for those.

    Returns:
        ``[batch, {axes}, heads, head_dim_v]`` in the dtype of ``query``, or ``(out, lse)``.
    """


def _public(rank: int, axes: str, rpb_shape: str):
    """``na{rank}d``: one signature for the three ranks (the seeds' positional order, then keywords)."""

    def na(
        query,
        key,
        value,
        kernel_size,
        dilation=1,
        is_causal=False,
        rpb=None,
        scale=None,
        additional_keys=None,
        additional_values=None,
        *,
        stride=1,
        return_lse=False,
        is_casual=None,
    ):
        is_causal = causal_alias(is_causal, is_casual, f"na{rank}d")
        return _na(
            rank,
            query,
            key,
            value,
            kernel_size,
            dilation,
            is_causal,
            rpb,
            scale,
            additional_keys,
            additional_values,
            stride,
            return_lse,
        )

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = _DOC.format(n=rank, axes=axes, rpb=rpb_shape)
    return na


na1d = _public(1, "length", "2 * kernel_size - 1")
na2d = _public(2, "height, width", "2 * kh - 1, 2 * kw - 1")
na3d = _public(3, "depth, height, width", "2 * kd - 1, 2 * kh - 1, 2 * kw - 1")
