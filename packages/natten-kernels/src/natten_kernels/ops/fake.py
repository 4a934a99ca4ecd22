"""Fake (meta) implementations of every ``natten::`` op: shapes, dtypes and devices only.

They let FakeTensor tracing (torch.compile, opcheck, meta-device models) run without the kernels.
Each takes the call's arguments by name (``a.q``, ``a.rpb``, ...; natten_kernels.ops.spec.bind).
"""

from __future__ import annotations

import torch


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _empty_like_or_none(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)


def _contiguous_empty_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def fused_forward(a):
    out = a.q.new_empty((*a.q.shape[:-1], a.v.shape[-1]))
    lse = a.q.new_empty(a.q.shape[:-1], dtype=_lse_dtype(a.q.dtype))
    return out, lse


def fused_backward(a):
    return (
        _contiguous_empty_like(a.q),
        _contiguous_empty_like(a.k),
        _contiguous_empty_like(a.v),
        _empty_like_or_none(a.rpb, a.q),
        _empty_like_or_none(a.additional_keys, a.q),
        _empty_like_or_none(a.additional_values, a.q),
    )


def _num_slots(kernel_size) -> int:
    n = 1
    for k in kernel_size:
        n *= k
    return n


def qk_forward(a):
    return a.q.new_empty((*a.q.shape[:-1], _num_slots(a.kernel_size)))


def qk_backward(a):
    return _contiguous_empty_like(a.q), _contiguous_empty_like(a.k), _empty_like_or_none(a.rpb, a.q)


def av_forward(a):
    return a.v.new_empty(a.v.shape)


def av_backward(a):
    return _contiguous_empty_like(a.attn), _contiguous_empty_like(a.v)
