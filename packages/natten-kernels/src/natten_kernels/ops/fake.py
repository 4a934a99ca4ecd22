"""Fake (meta) implementations of every ``natten::`` op: shapes, dtypes and devices only.

They let FakeTensor tracing (torch.compile, opcheck, meta-device models) run without the kernels.
"""

from __future__ import annotations

import torch

from natten_kernels.ops.names import OPS


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _empty_like_or_none(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)


def _contiguous_empty_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def fused_forward(
    q, k, v, rpb, additional_keys, additional_values, kernel_size, dilation, stride, is_causal, scale, config=()
):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    lse = q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))
    return out, lse


def fused_backward(
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
    scale,
    config=(),
):
    return (
        _contiguous_empty_like(q),
        _contiguous_empty_like(k),
        _contiguous_empty_like(v),
        _empty_like_or_none(rpb, q),
        _empty_like_or_none(additional_keys, q),
        _empty_like_or_none(additional_values, q),
    )


def _num_slots(kernel_size) -> int:
    n = 1
    for k in kernel_size:
        n *= k
    return n


def qk_forward(q, k, rpb, kernel_size, dilation, stride, is_causal, config=()):
    return q.new_empty((*q.shape[:-1], _num_slots(kernel_size)))


def qk_backward(grad_attn, q, k, rpb, kernel_size, dilation, stride, is_causal, config=()):
    return _contiguous_empty_like(q), _contiguous_empty_like(k), _empty_like_or_none(rpb, q)


def av_forward(attn, v, kernel_size, dilation, stride, is_causal, config=()):
    return v.new_empty(v.shape)


def av_backward(grad_out, attn, v, kernel_size, dilation, stride, is_causal, config=()):
    return _contiguous_empty_like(attn), _contiguous_empty_like(v)


_FAKES = {
    "na_fused_forward": fused_forward,
    "na_fused_backward": fused_backward,
    "na_qk_forward": qk_forward,
    "na_qk_backward": qk_backward,
    "na_av_forward": av_forward,
    "na_av_backward": av_backward,
}


def register() -> None:
    assert set(_FAKES) == set(OPS), "every op needs exactly one fake implementation"
    for name, fn in _FAKES.items():
        torch.library.register_fake(f"natten::{name}", fn)
