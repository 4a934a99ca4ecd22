"""Head parallelism: an all-to-all turns token shards of every head into the whole grid of ``H / P``
heads (rank ``r`` takes heads ``[r * H / P, (r + 1) * H / P)``), the ordinary op runs on the whole
grid, and the reverse all-to-all brings the output back to the token shards. Each direction's backward
is the other direction. Shards may be uneven: split sizes follow every rank's box. Tensors of one
dtype travel in one all-to-all (q, k and v together).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from natten.distributed.accounting import Exchange, record
from natten.distributed.plan import Layout


def _box(layout: Layout, rank: int) -> tuple:
    return (slice(None), *(slice(a, b) for a, b in layout.bounds[rank]))


def _tokens(layout: Layout, rank: int) -> int:
    return math.prod(layout.local_shape(rank))


def _account(what: str, direction: str, rank: int, sizes_in, sizes_out, itemsize: int) -> None:
    sent = sum(n for r, n in enumerate(sizes_in) if r != rank) * itemsize
    received = sum(n for r, n in enumerate(sizes_out) if r != rank) * itemsize
    peers = tuple(r for r, n in enumerate(sizes_out) if r != rank and n)
    record(Exchange(f"heads:{what}", direction, rank, sent, received, peers))


def _all_to_all(send: list[torch.Tensor], sizes_out: list[int], group) -> list[torch.Tensor]:
    """Chunk ``r`` of ``send`` (flat) goes to rank ``r``; returns the flat chunk from each rank."""
    recv = send[0].new_empty(sum(sizes_out))
    dist.all_to_all_single(recv, torch.cat(send), sizes_out, [c.numel() for c in send], group=group)
    return list(recv.split(sizes_out))


def to_heads(xs, layout: Layout, rank: int, group, what: str, direction: str) -> list[torch.Tensor]:
    """``[B, *S_local, H_i, C_i]`` -> ``[B, *S_global, H_i / P, C_i]`` for each tensor of ``xs``."""
    world, b = layout.world, xs[0].shape[0]
    heads = [(x.shape[-2] // world, x.shape[-1]) for x in xs]
    # chunk r: this shard's heads of rank r, for every tensor
    split = [x.reshape(*x.shape[:-2], world, h, c) for x, (h, c) in zip(xs, heads)]
    send = [torch.cat([s.select(-3, r).reshape(-1) for s in split]) for r in range(world)]
    per_token = sum(h * c for h, c in heads)
    sizes_out = [b * _tokens(layout, r) * per_token for r in range(world)]
    chunks = _all_to_all(send, sizes_out, group)
    outs = [x.new_empty((b, *layout.spatial, h, c)) for x, (h, c) in zip(xs, heads)]
    for r, chunk in enumerate(chunks):
        local = layout.local_shape(r)
        parts = chunk.split([b * math.prod(local) * h * c for h, c in heads])
        for out, part, (h, c) in zip(outs, parts, heads):
            out[_box(layout, r)] = part.view(b, *local, h, c)
    _account(what, direction, rank, [c.numel() for c in send], sizes_out, xs[0].element_size())
    return outs


def from_heads(xs, layout: Layout, rank: int, group, what: str, direction: str) -> list[torch.Tensor]:
    """``[B, *S_global, H_i / P, C_i]`` -> ``[B, *S_local, H_i, C_i]`` for each tensor of ``xs``."""
    world, b = layout.world, xs[0].shape[0]
    heads = [(x.shape[-2], x.shape[-1]) for x in xs]
    send = [torch.cat([x[_box(layout, r)].reshape(-1) for x in xs]) for r in range(world)]
    local = layout.local_shape(rank)
    numel = [b * math.prod(local) * h * c for h, c in heads]
    chunks = _all_to_all(send, [sum(numel)] * world, group)
    outs = []
    for i, (h, c) in enumerate(heads):
        parts = [chunk.split(numel)[i].view(b, *local, h, c) for chunk in chunks]
        outs.append(torch.stack(parts, dim=-3).reshape(b, *local, world * h, c))
    _account(what, direction, rank, [c.numel() for c in send], [sum(numel)] * world, xs[0].element_size())
    return outs


class HeadAllToAll(torch.autograd.Function):
    """``to_heads=True``: token shards of all heads -> whole grids of this rank's heads (:func:`to_heads`);
    ``False``: the reverse (:func:`from_heads`). The backward is the other direction."""

    @staticmethod
    def forward(ctx, to_heads_: bool, layout: Layout, rank: int, group, what: str, *xs):
        ctx.direction, ctx.args = to_heads_, (layout, rank, group, what)
        move = to_heads if to_heads_ else from_heads
        return tuple(move([x.contiguous() for x in xs], *ctx.args, "forward"))

    @staticmethod
    def backward(ctx, *grads):
        move = from_heads if ctx.direction else to_heads
        return (None,) * 5 + tuple(move([g.contiguous() for g in grads], *ctx.args, "backward"))
