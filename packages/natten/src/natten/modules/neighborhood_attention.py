"""``NeighborhoodAttention1D/2D/3D``: qkv projection, neighborhood attention, output projection."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from natten import context
from natten.functional.fused import _na
from natten.functional.unfused import _av, _qk
from natten.functional.validation import (
    BoolOrTuple,
    IntOrTuple,
    causal_alias,
    check_bool,
    check_scale,
    normalize_params,
)


class _NeighborhoodAttentionNd(nn.Module):
    rank: int

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: IntOrTuple,
        dilation: IntOrTuple = 1,
        is_causal: BoolOrTuple = False,
        rel_pos_bias: bool = False,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_experimental_ops: bool = False,
        *,
        stride: IntOrTuple = 1,
        kernel_size_d: int | None = None,
        dilation_d: int | None = None,
        is_casual: BoolOrTuple | None = None,
        **unexpected,
    ):
        super().__init__()
        if self.rank == 3:
            kernel_size = _override_depth(kernel_size, kernel_size_d, "kernel_size")
            dilation = _override_depth(dilation, dilation_d, "dilation")
        else:
            unexpected.update(
                {k: v for k, v in (("kernel_size_d", kernel_size_d), ("dilation_d", dilation_d)) if v is not None}
            )
        if unexpected:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(sorted(unexpected))}"
            )
        is_causal = causal_alias(is_causal, is_casual, type(self).__name__)
        # NATTEN 0.17's switch to its torch.compile-able ops: natten's ops always are; accepted, no effect
        self.use_experimental_ops = check_bool(use_experimental_ops, "use_experimental_ops")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int; got {num_heads!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        params = normalize_params(self.rank, kernel_size, dilation, stride, is_causal)
        rel_pos_bias = check_bool(rel_pos_bias, "rel_pos_bias")
        qkv_bias = check_bool(qkv_bias, "qkv_bias")
        qk_scale = check_scale(qk_scale, name="qk_scale")
        if rel_pos_bias and params.any_causal:
            raise ValueError(f"rel_pos_bias is not supported with causal masking; got is_causal={params.is_causal}")
        if rel_pos_bias and any(k % 2 == 0 for k in params.kernel_size):
            raise ValueError(f"rel_pos_bias requires an odd kernel_size; got kernel_size={params.kernel_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5 if qk_scale is None else qk_scale  # 0.0 is a valid scale
        self.kernel_size = params.kernel_size
        self.dilation = params.dilation
        self.stride = params.stride
        self.is_causal = params.is_causal
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in self.kernel_size)))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop_rate = attn_drop
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, stride={self.stride}, is_causal={self.is_causal}, "
            f"has_bias={self.rpb is not None}"
        )

    def _uses_fused(self) -> bool:
        return context.is_fused_na_enabled() and not (self.training and self.attn_drop_rate > 0)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, *S, heads, head_dim] -> [B, *S, heads, head_dim]."""
        args = (self.kernel_size, self.dilation)
        if self._uses_fused():
            return _na(self.rank, q, k, v, *args, self.is_causal, self.rpb, self.scale, None, None, self.stride, False)
        # Unfused: heads-first, scale the query, materialize the [.., prod(kernel)] weights.
        to_heads_first = (0, self.rank + 1, *range(1, self.rank + 1), self.rank + 2)
        q, k, v = (t.permute(to_heads_first) for t in (q, k, v))
        attn = _qk(self.rank, q * self.scale, k, *args, None, self.is_causal, self.rpb, self.stride)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = _av(self.rank, attn, v, *args, None, self.is_causal, self.stride)
        return out.permute(0, *range(2, self.rank + 2), 1, self.rank + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
        if x.is_nested:
            raise TypeError(
                f"x is a nested tensor; {type(self).__name__} does not support nested tensors: run each "
                f"sequence as a batch of one (x.unsqueeze(0) per component of x.unbind())"
            )
        if x.dim() != self.rank + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [batch, {self._axes()}, dim={self.dim}]; "
                f"got {tuple(x.shape)}"
            )
        check_scale(self.scale, x.dtype, "qk_scale")
        spatial = tuple(x.shape[1:-1])
        # Inputs smaller than one neighborhood are zero-padded at the end, then cropped (as NATTEN does).
        pad = [max(k * d - n, 0) for k, d, n in zip(self.kernel_size, self.dilation, spatial)]
        if any(pad):
            flat = [0, 0]
            for p in reversed(pad):
                flat += [0, p]
            x = F.pad(x, flat)
        b, *padded, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, *padded, 3, self.num_heads, self.head_dim).unbind(-3)
        out = self._attend(q, k, v).reshape(b, *padded, self.dim)
        if any(pad):
            out = out[(slice(None), *(slice(0, n) for n in spatial))]
        return self.proj_drop(self.proj(out))

    def _axes(self) -> str:
        return {1: "length", 2: "height, width", 3: "depth, height, width"}[self.rank]


class NeighborhoodAttention1D(_NeighborhoodAttentionNd):
    """1-D neighborhood attention over ``[batch, length, dim]``."""

    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttentionNd):
    """2-D neighborhood attention over ``[batch, height, width, dim]``."""

    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttentionNd):
    """3-D neighborhood attention over ``[batch, depth, height, width, dim]``.

    ``kernel_size_d`` / ``dilation_d`` override the depth axis when ``kernel_size`` / ``dilation`` are ints.
    """

    rank = 3


def _override_depth(value, depth, name):
    if depth is None:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name}_d can only be combined with an int {name}; got {name}={value!r}")
    return (depth, value, value)
