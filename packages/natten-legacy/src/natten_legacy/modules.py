"""Legacy neighborhood-attention Modules built from gathered tensor views, in pure PyTorch.

Like the original legacy NATTEN (pad + unfold), keys and values are materialized per query:
``[B, heads, *S, *kernel, head_dim]``, i.e. ``prod(kernel)`` times the size of k and v. That is the
point: a slow, memory-hungry but obviously-correct path that runs anywhere. It does not use the
dense reference; it shares only the per-axis §3 slot tables (:func:`neighborhood_slots`).

Constructor and forward match ``natten.NeighborhoodAttention{1,2,3}D``, parameter names included,
so state_dicts load into each other (``qkv.weight``, ``qkv.bias``, ``rpb``, ``proj.weight``,
``proj.bias``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from natten_legacy.reference import _axis_views, neighborhood_slots

__all__ = [
    "LegacyNeighborhoodAttention",
    "LegacyNeighborhoodAttention1D",
    "LegacyNeighborhoodAttention2D",
    "LegacyNeighborhoodAttention3D",
]


def _tuple(value, rank: int, name: str, kind: type) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != rank:
            raise ValueError(f"{name} must be a {kind.__name__} or a tuple of {rank}, got {value!r}")
        items = tuple(value)
    else:
        items = (value,) * rank
    for x in items:
        if kind is int and (isinstance(x, bool) or not isinstance(x, int)):
            raise TypeError(f"{name} must hold ints, got {value!r}")
        if kind is bool and not isinstance(x, bool):
            raise TypeError(f"{name} must hold bools, got {value!r}")
    return items


def _gather_neighborhoods(x: Tensor, keys: Sequence[Tensor]) -> Tensor:
    """``x [B, H, *S, E]`` -> ``[B, H, *S, *kernel, E]``: the slot keys of every query.

    ``keys[a]`` is the ``[L_a, k_a]`` key table of axis ``a``; gathering axis by axis turns axis
    ``a`` into ``(L_a, k_a)`` and a final permute moves the kernel axes behind the spatial ones.
    """
    rank = len(keys)
    for a, table in enumerate(keys):
        dim = 2 + 2 * a  # earlier axes have already been split into (L, k)
        x = x.index_select(dim, table.reshape(-1)).unflatten(dim, tuple(table.shape))
    perm = [0, 1, *(2 + 2 * a for a in range(rank)), *(3 + 2 * a for a in range(rank)), 2 + 2 * rank]
    return x.permute(perm)


class _LegacyNeighborhoodAttention(nn.Module):
    """Shared implementation; subclasses fix the spatial rank."""

    rank: int = 0

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size,
        dilation=1,
        is_causal=False,
        rel_pos_bias: bool = False,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        *,
        stride=1,
    ) -> None:
        super().__init__()
        rank = self.rank
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        kernel = _tuple(kernel_size, rank, "kernel_size", int)
        dil = _tuple(dilation, rank, "dilation", int)
        strd = _tuple(stride, rank, "stride", int)
        causal = _tuple(is_causal, rank, "is_causal", bool)
        if any(k < 2 for k in kernel):
            raise ValueError(f"kernel_size must be >= 2 on every axis, got {kernel}")
        if any(d < 1 for d in dil):
            raise ValueError(f"dilation must be >= 1 on every axis, got {dil}")
        if any(not 1 <= s <= k for s, k in zip(strd, kernel)):
            raise ValueError(
                f"stride must be in [1, kernel_size] on every axis, got stride {strd} for kernel_size {kernel}"
            )
        if rel_pos_bias and any(k % 2 == 0 for k in kernel):
            raise ValueError(f"rel_pos_bias needs odd kernel sizes, got kernel_size {kernel}")
        if rel_pos_bias and any(causal):
            raise ValueError(f"rel_pos_bias is not supported with causal masking, got is_causal {causal}")

        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.kernel_size = kernel
        self.dilation = dil
        self.stride = strd
        self.is_causal = causal
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *(2 * k - 1 for k in kernel)))
            nn.init.trunc_normal_(self.rpb, std=0.02)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, stride={self.stride}, is_causal={self.is_causal}, "
            f"rel_pos_bias={self.rpb is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, *S, dim]`` -> ``[B, *S, dim]`` (``S`` has ``rank`` axes)."""
        rank = self.rank
        if x.dim() != rank + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [B, {rank} spatial axes, dim={self.dim}], "
                f"got {list(x.shape)}"
            )
        B, *S, C = x.shape
        # Axes shorter than the dilated window are zero-padded at the end and cropped afterwards,
        # as in the original NATTEN (padded tokens still act as keys: qkv has a bias).
        window = [k * d for k, d in zip(self.kernel_size, self.dilation)]
        pad = [max(0, w - L) for w, L in zip(window, S)]
        if any(pad):
            # F.pad lists (left, right) pairs from the last dim backwards; channels are not padded.
            x = F.pad(x, [0, 0] + [p for axis_pad in reversed(pad) for p in (0, axis_pad)])
        Sp = list(x.shape[1:-1])

        qkv = self.qkv(x).reshape(B, *Sp, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(rank + 1, 0, rank + 2, *range(1, rank + 1), rank + 3)  # [3, B, H, *Sp, hd]
        q, k, v = qkv.unbind(0)
        out = self._attention(q * self.scale, k, v, Sp)  # [B, H, *Sp, hd]

        out = out.permute(0, *range(2, rank + 2), 1, rank + 2).reshape(B, *Sp, C)
        if any(pad):
            out = out[(slice(None), *(slice(0, L) for L in S))]
        return self.proj_drop(self.proj(out))

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, spatial: Sequence[int]) -> Tensor:
        """Scaled ``q``, ``k``, ``v [B, H, *S, hd]`` -> ``[B, H, *S, hd]``."""
        B, H = q.shape[:2]
        hd = q.shape[-1]
        tables = [
            neighborhood_slots(L, kk, d, s, c, device=q.device)
            for L, kk, d, s, c in zip(spatial, self.kernel_size, self.dilation, self.stride, self.is_causal)
        ]
        keys = [t[0] for t in tables]
        N = q.shape[2:-1].numel()
        K = 1
        for kk in self.kernel_size:
            K *= kk

        k_nb = _gather_neighborhoods(k, keys).reshape(B, H, N, K, hd)
        logits = (k_nb @ q.reshape(B, H, N, hd, 1)).squeeze(-1)  # batched matvec: [B, H, N, K]
        if self.rpb is not None:
            # Per axis, the relative position of slot t is (k-1) + (key - query) / d (exact division).
            rel = [
                (kk - 1) + (table - torch.arange(L, device=q.device)[:, None]) // d
                for table, L, kk, d in zip(keys, spatial, self.kernel_size, self.dilation)
            ]
            bias = self.rpb[(slice(None), *_axis_views(rel))]  # [H, *S, *kernel]
            logits = logits + bias.reshape(H, N, K).to(logits.dtype)
        valid = torch.ones((), dtype=torch.bool, device=q.device)
        for view in _axis_views([t[1] for t in tables]):
            valid = valid & view
        logits = logits.masked_fill(~valid.reshape(N, K), float("-inf"))

        attn = self.attn_drop(logits.softmax(dim=-1))
        v_nb = _gather_neighborhoods(v, keys).reshape(B, H, N, K, hd)
        out = (attn.unsqueeze(-2) @ v_nb).squeeze(-2)  # [B, H, N, hd]
        return out.reshape(B, H, *spatial, hd)


class LegacyNeighborhoodAttention1D(_LegacyNeighborhoodAttention):
    """1D neighborhood attention over ``x [B, L, dim]``; see :class:`LegacyNeighborhoodAttention2D`."""

    rank = 1


class LegacyNeighborhoodAttention2D(_LegacyNeighborhoodAttention):
    """2D neighborhood attention over ``x [B, H, W, dim]`` -> ``[B, H, W, dim]``.

    Args:
        dim: channels; ``dim % num_heads == 0``, ``head_dim = dim // num_heads``.
        num_heads: attention heads.
        kernel_size, dilation, stride: int or a tuple per spatial axis (``kernel_size >= 2``,
            ``1 <= stride <= kernel_size``).
        is_causal: bool or a tuple per axis.
        rel_pos_bias: learn ``rpb [num_heads, 2k-1 per axis]`` (odd kernels, no causal axis).
        qkv_bias: bias of the ``qkv`` projection.
        qk_scale: logit scale, default ``head_dim ** -0.5``.
        attn_drop, proj_drop: dropout on the attention weights and on the output.
    """

    rank = 2


class LegacyNeighborhoodAttention3D(_LegacyNeighborhoodAttention):
    """3D neighborhood attention over ``x [B, D, H, W, dim]``; see :class:`LegacyNeighborhoodAttention2D`.

    ``kernel_size_d`` / ``dilation_d`` set the depth axis when ``kernel_size`` / ``dilation`` are ints.
    """

    rank = 3

    def __init__(self, dim, num_heads, kernel_size, dilation=1, *args, kernel_size_d=None, dilation_d=None, **kw):
        kernel_size = _with_depth(kernel_size, kernel_size_d, "kernel_size")
        super().__init__(dim, num_heads, kernel_size, _with_depth(dilation, dilation_d, "dilation"), *args, **kw)


def _with_depth(value, depth: int | None, name: str):
    """``value`` with ``depth`` (3D's ``kernel_size_d`` / ``dilation_d``) on the depth axis, if given."""
    if depth is None:
        return value
    if isinstance(value, (list, tuple)):
        raise ValueError(f"{name}_d is only allowed when {name} is an int")
    return (depth, value, value)


LegacyNeighborhoodAttention = LegacyNeighborhoodAttention2D
