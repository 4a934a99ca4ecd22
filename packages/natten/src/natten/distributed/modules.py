"""``DistributedNeighborhoodAttention{1,2,3}D``: ``NeighborhoodAttention{1,2,3}D`` (same parameters,
same state dict) on a token grid sharded across a process group. The qkv and output projections
run on each rank's own tokens; only the attention exchanges keys/values (or heads).

Gradients: ``rpb`` is replicated and its gradient summed over the group by the op (every rank holds
the single-process gradient); the projections' gradients cover each rank's own tokens, so sum them
over the group, as for any layer of a token-sharded model.
"""

from __future__ import annotations

import torch

from natten.distributed.functional import _na
from natten.modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D


class _Distributed:
    """Mixed in before a ``NeighborhoodAttention*D``: keyword arguments ``group``, ``sharded_axes``,
    ``grid`` and ``method`` as in ``natten.distributed.na*d``."""

    rank: int

    def __init__(self, *args, group=None, sharded_axes=0, grid=None, method="halo", **kwargs):
        super().__init__(*args, **kwargs)
        if self.attn_drop_rate > 0:
            raise ValueError(
                f"attn_drop must be 0 in {type(self).__name__} (attention-weight dropout needs the unfused "
                f"ops, which the distributed op does not run); got attn_drop={self.attn_drop_rate}"
            )
        self.group, self.sharded_axes, self.grid, self.method = group, sharded_axes, grid, method

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sharded_axes={self.sharded_axes}, grid={self.grid}, method={self.method!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: this rank's shard ``[batch, *local_spatial, dim]`` -> the same shape."""
        if not isinstance(x, torch.Tensor) or x.is_nested:
            raise TypeError(f"x must be a regular torch.Tensor; got {type(x).__name__}")
        if x.dim() != self.rank + 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [batch, {self._axes()}, dim={self.dim}] (this rank's "
                f"shard); got {tuple(x.shape)}"
            )
        b, *local, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, *local, 3, self.num_heads, self.head_dim).unbind(-3)
        tensors = dict(query=q, key=k, value=v, rpb=self.rpb, additional_keys=None, additional_values=None)
        options = (self.kernel_size, self.dilation, self.is_causal, self.scale, self.stride, False)
        out = _na(self.rank, tensors, *options, self.group, self.sharded_axes, self.grid, self.method)
        return self.proj_drop(self.proj(out.reshape(b, *local, self.dim)))


class DistributedNeighborhoodAttention1D(_Distributed, NeighborhoodAttention1D):
    """1-D neighborhood attention over this rank's shard ``[batch, length, dim]``."""


class DistributedNeighborhoodAttention2D(_Distributed, NeighborhoodAttention2D):
    """2-D neighborhood attention over this rank's shard ``[batch, height, width, dim]``."""


class DistributedNeighborhoodAttention3D(_Distributed, NeighborhoodAttention3D):
    """3-D neighborhood attention over this rank's shard ``[batch, depth, height, width, dim]``."""
