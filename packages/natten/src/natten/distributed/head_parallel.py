"""Head parallelism: an all-to-all turns token shards of every head into the whole grid of ``H / P``
heads (rank ``r`` takes heads ``[r * H / P, (r + 1) * H / P)``), the ordinary op runs on the whole
grid, and the reverse all-to-all brings the output back to the token shards. Each direction's backward
is the other direction. Shards may be uneven: split sizes follow every rank's box.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from natten.distributed.accounting import Exchange, record
from natten.distributed.plan import Layout


def _box(layout: Layout, rank: int) -> tuple:
    return (slice(None), *(slice(a, b) for a, b in layout.bounds[rank]))


def _to_heads(x: torch.Tensor, layout: Layout, rank: int, group, what: str, direction: str) -> torch.Tensor:
    """``[B, *S_local, H, C]`` -> ``[B, *S_global, H / P, C]``."""
    world = layout.world
    b, heads, c = x.shape[0], x.shape[-2], x.shape[-1]
    h = heads // world
    # rank-major chunks: chunk r holds this shard's heads of rank r
    send = x.reshape(*x.shape[:-2], world, h, c).movedim(-3, 0).contiguous()
    sizes_in = [send[0].numel()] * world
    sizes_out = [b * _tokens(layout, r) * h * c for r in range(world)]
    recv = x.new_empty(sum(sizes_out))
    dist.all_to_all_single(recv, send.reshape(-1), sizes_out, sizes_in, group=group)
    out = x.new_empty((b, *layout.spatial, h, c))
    for r, part in enumerate(recv.split(sizes_out)):
        out[_box(layout, r)] = part.view(b, *layout.local_shape(r), h, c)
    _account(what, direction, rank, sizes_in, sizes_out, x.element_size())
    return out


def _from_heads(x: torch.Tensor, layout: Layout, rank: int, group, what: str, direction: str) -> torch.Tensor:
    """``[B, *S_global, H / P, C]`` -> ``[B, *S_local, H, C]``."""
    world = layout.world
    b, h, c = x.shape[0], x.shape[-2], x.shape[-1]
    send = torch.cat([x[_box(layout, r)].reshape(-1) for r in range(world)])
    sizes_in = [b * _tokens(layout, r) * h * c for r in range(world)]
    local = layout.local_shape(rank)
    sizes_out = [b * _tokens(layout, rank) * h * c] * world
    recv = x.new_empty(sum(sizes_out))
    dist.all_to_all_single(recv, send, sizes_out, sizes_in, group=group)
    out = recv.view(world, b, *local, h, c).movedim(0, -3).reshape(b, *local, world * h, c)
    _account(what, direction, rank, sizes_in, sizes_out, x.element_size())
    return out


def _tokens(layout: Layout, rank: int) -> int:
    return math.prod(layout.local_shape(rank))


def _account(what: str, direction: str, rank: int, sizes_in, sizes_out, itemsize: int) -> None:
    sent = sum(n for r, n in enumerate(sizes_in) if r != rank) * itemsize
    received = sum(n for r, n in enumerate(sizes_out) if r != rank) * itemsize
    peers = tuple(r for r, n in enumerate(sizes_out) if r != rank and n)
    record(Exchange(f"heads:{what}", direction, rank, sent, received, peers))


class ToHeads(torch.autograd.Function):
    """Token shard of all heads -> whole grid of this rank's heads; backward: the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x, layout: Layout, rank: int, group, what: str):
        ctx.args = (layout, rank, group, what)
        return _to_heads(x, layout, rank, group, what, "forward")

    @staticmethod
    def backward(ctx, grad):
        return _from_heads(grad.contiguous(), *ctx.args, "backward"), None, None, None, None


class FromHeads(torch.autograd.Function):
    """Whole grid of this rank's heads -> token shard of all heads; backward: the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x, layout: Layout, rank: int, group, what: str):
        ctx.args = (layout, rank, group, what)
        return _from_heads(x.contiguous(), layout, rank, group, what, "forward")

    @staticmethod
    def backward(ctx, grad):
        return _to_heads(grad.contiguous(), *ctx.args, "backward"), None, None, None, None
