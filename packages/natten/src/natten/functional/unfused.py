"""Unfused neighborhood attention: ``na{1,2,3}d_qk`` -> (softmax, dropout, ...) -> ``na{1,2,3}d_av``.

Heads-first layout ``[batch, heads, *spatial, head_dim]``. No scale is applied: scale the query
yourself. Attention weights are ``[batch, heads, *spatial, prod(kernel_size) (+ num_additional)]``.
Nested tensors are accepted in the forward pass, in either convention: components that are whole
batches ``[batch_i, heads, *spatial_i, D]`` (NATTEN 0.17's; the nested tensor has one more dimension
than a plain input) or single samples ``[heads, *spatial_i, D]`` (one dimension fewer); each component
is run on its own and the results are nested the same way.
"""

from __future__ import annotations

import torch

from natten.autograd.unfused import av, qk
from natten.functional.dispatch import problem_for, select_backend, wants_forward_ad
from natten.functional.validation import (
    causal_alias,
    check_unfused_av,
    check_unfused_qk,
    normalize_params,
)


def _is_nested(*tensors) -> bool:
    return any(isinstance(t, torch.Tensor) and t.is_nested for t in tensors)


def _map_nested(fn, rank: int, *tensors):
    """Run ``fn`` per component of the nested inputs (non-nested inputs are shared) and re-nest.
    Components of ``rank + 3`` dimensions are whole batches (NATTEN 0.17), of ``rank + 2`` samples."""
    parts = [t.unbind() if isinstance(t, torch.Tensor) and t.is_nested else None for t in tensors]
    n = next(len(p) for p in parts if p is not None)
    if any(p is not None and len(p) != n for p in parts):
        raise ValueError("nested inputs must have the same number of components")
    lead = next(p for p in parts if p is not None)[0]
    if lead.dim() not in (rank + 2, rank + 3):
        raise ValueError(
            f"nested components must be whole batches [batch, heads, *spatial ({rank} axes), D] or samples "
            f"[heads, *spatial, D]; got a component of shape {list(lead.shape)}"
        )
    batched = lead.dim() == rank + 3
    outs = []
    for i in range(n):
        if batched:
            outs.append(fn(*[p[i] if p is not None else t for p, t in zip(parts, tensors)]))
        else:
            outs.append(fn(*[p[i].unsqueeze(0) if p is not None else t for p, t in zip(parts, tensors)]).squeeze(0))
    return torch.nested.as_nested_tensor(outs)


def _qk(rank, query, key, kernel_size, dilation, additional_keys, is_causal, rpb, stride):
    if _is_nested(query, key, additional_keys):
        return _map_nested(
            lambda q, k, ak: _qk(rank, q, k, kernel_size, dilation, ak, is_causal, rpb, stride),
            rank,
            query,
            key,
            additional_keys,
        )
    params = normalize_params(rank, kernel_size, dilation, stride, is_causal)
    check_unfused_qk(query, key, params, rpb, additional_keys)
    problem = problem_for(
        "unfused", params, query, query.shape[-1], query.shape[-1], (query, key, rpb), rpb=rpb is not None
    )
    op_params = (*params.as_op_args(), list(select_backend(problem).unfused_config))
    attn = qk(query, key, rpb, op_params, wants_forward_ad(problem))
    if additional_keys is not None:
        extra = query.flatten(2, -2) @ additional_keys.transpose(-1, -2)
        attn = torch.cat([attn, extra.reshape(*query.shape[:-1], -1)], dim=-1)
    return attn


def _av(rank, attn, value, kernel_size, dilation, additional_values, is_causal, stride):
    if _is_nested(attn, value, additional_values):
        return _map_nested(
            lambda a, v, av_: _av(rank, a, v, kernel_size, dilation, av_, is_causal, stride),
            rank,
            attn,
            value,
            additional_values,
        )
    params = normalize_params(rank, kernel_size, dilation, stride, is_causal)
    check_unfused_av(attn, value, params, additional_values)
    problem = problem_for("unfused", params, value, value.shape[-1], value.shape[-1], (attn, value))
    op_params = (*params.as_op_args(), list(select_backend(problem).unfused_config))
    forward_ad = wants_forward_ad(problem)
    slots = params.num_slots
    if additional_values is None:
        return av(attn, value, op_params, forward_ad)
    out = av(attn[..., :slots], value, op_params, forward_ad)
    extra = attn[..., slots:].flatten(2, -2) @ additional_values
    return out + extra.reshape(value.shape)


_QK_DOC = """{n}-D neighborhood attention weights (unfused, heads-first, no scale).

    Args:
        query, key: ``[batch, heads, {axes}, head_dim]``.
        kernel_size, dilation, is_causal: an int/bool or one per axis.
        additional_keys: ``[batch, heads, num_additional, head_dim]``; their logits are appended.
        rpb: ``[heads, {rpb}]``; odd kernels, no causal axis.
        stride: (keyword) an int or one per axis, ``1 <= stride <= kernel_size``.

    Returns:
        ``[batch, heads, {axes}, prod(kernel_size) (+ num_additional)]``: slots in row-major kernel
        order; causal slots past the query hold ``-inf``.
    """

_AV_DOC = """{n}-D neighborhood attention output from weights (unfused, heads-first).

    Args:
        attn: ``[batch, heads, {axes}, prod(kernel_size) (+ num_additional)]``, e.g. softmax of ``na{n}d_qk``.
        value: ``[batch, heads, {axes}, head_dim]``.
        kernel_size, dilation, is_causal: as given to ``na{n}d_qk``.
        additional_values: ``[batch, heads, num_additional, head_dim]``.
        stride: (keyword) as given to ``na{n}d_qk``.

    Returns:
        ``[batch, heads, {axes}, head_dim]``.
    """


def na1d_qk(
    query, key, kernel_size, dilation=1, additional_keys=None, is_causal=False, rpb=None, *, stride=1, is_casual=None
):
    is_causal = causal_alias(is_causal, is_casual, "na1d_qk")
    return _qk(1, query, key, kernel_size, dilation, additional_keys, is_causal, rpb, stride)


def na2d_qk(
    query, key, kernel_size, dilation=1, additional_keys=None, is_causal=False, rpb=None, *, stride=1, is_casual=None
):
    is_causal = causal_alias(is_causal, is_casual, "na2d_qk")
    return _qk(2, query, key, kernel_size, dilation, additional_keys, is_causal, rpb, stride)


def na3d_qk(
    query, key, kernel_size, dilation=1, additional_keys=None, is_causal=False, rpb=None, *, stride=1, is_casual=None
):
    is_causal = causal_alias(is_causal, is_casual, "na3d_qk")
    return _qk(3, query, key, kernel_size, dilation, additional_keys, is_causal, rpb, stride)


def na1d_av(attn, value, kernel_size, dilation=1, additional_values=None, is_causal=False, *, stride=1, is_casual=None):
    is_causal = causal_alias(is_causal, is_casual, "na1d_av")
    return _av(1, attn, value, kernel_size, dilation, additional_values, is_causal, stride)


def na2d_av(attn, value, kernel_size, dilation=1, additional_values=None, is_causal=False, *, stride=1, is_casual=None):
    is_causal = causal_alias(is_causal, is_casual, "na2d_av")
    return _av(2, attn, value, kernel_size, dilation, additional_values, is_causal, stride)


def na3d_av(attn, value, kernel_size, dilation=1, additional_values=None, is_causal=False, *, stride=1, is_casual=None):
    is_causal = causal_alias(is_causal, is_casual, "na3d_av")
    return _av(3, attn, value, kernel_size, dilation, additional_values, is_causal, stride)


for _n, _axes, _rpb in (
    (1, "length", "2k-1"),
    (2, "height, width", "2kh-1, 2kw-1"),
    (3, "depth, height, width", "2kd-1, 2kh-1, 2kw-1"),
):
    globals()[f"na{_n}d_qk"].__doc__ = _QK_DOC.format(n=_n, axes=_axes, rpb=_rpb)
    globals()[f"na{_n}d_av"].__doc__ = _AV_DOC.format(n=_n, axes=_axes)
del _n, _axes, _rpb
