"""The differentiable halo exchange: a rank's shard -> its extended grid, holding every key/value its
queries attend (received point to point from their owners) and zeros where nothing lands.

Backward returns the halo part of the gradient to the owners, who add it to their own (the reverse
transfers of the forward's). Transfers are posted together with ``torch.distributed.batch_isend_irecv``
(NCCL groups them; gloo runs them on its own threads), and the rank fills its extended grid with its
own shard while they are in flight.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist

from natten.distributed.accounting import Exchange, record
from natten.distributed.plan import RankPlan, Transfer


def selector(index: tuple[tuple[int, ...], ...], device) -> tuple:
    """Indexes the spatial axes of a ``[B, *S, H, C]`` tensor at the product of ``index``'s positions:
    slices where every position list is a contiguous run, an open mesh of index tensors otherwise."""
    if all(ix[-1] - ix[0] + 1 == len(ix) for ix in index):
        return (slice(None), *(slice(ix[0], ix[-1] + 1) for ix in index))
    return (slice(None), *_mesh(index, torch.device(device)))


@functools.lru_cache(maxsize=512)
def _mesh(index: tuple[tuple[int, ...], ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    rank = len(index)
    mesh = []
    for x, ix in enumerate(index):
        shape = [1] * rank
        shape[x] = len(ix)
        mesh.append(torch.tensor(ix, dtype=torch.long, device=device).view(shape))
    return tuple(mesh)


def _words(x: torch.Tensor) -> torch.Tensor:
    """``x`` viewed as 8-byte integers where its channels and strides allow it (else ``x``): torch
    copies a strided block element by element, and moved bf16 shards into an extended grid in 2-byte
    steps at half the speed of 8-byte ones (S6 cut 2 x 1 on an H200: 1.68 -> 0.80 ms, the probe
    probe_halo_copies.py). ``view`` checks the layout itself: a failed view costs an exception, a
    successful one a microsecond (these copies are issued per block, host time counts)."""
    if x.element_size() >= 8:
        return x
    try:
        return x.view(torch.int64)
    except RuntimeError:
        return x


def assign(dst: torch.Tensor, index: tuple, src: torch.Tensor) -> None:
    """``dst[index] = src`` as a bitwise copy of 8-byte words where both tensors allow it (``index``
    addresses the batch and spatial axes only)."""
    wide_dst, wide_src = _words(dst), _words(src)
    if wide_dst.dtype == wide_src.dtype:
        wide_dst[index] = wide_src
    else:
        dst[index] = src


def take(x: torch.Tensor, index: tuple, copy: bool = False, flat: bool = False) -> torch.Tensor:
    """``x[index]``, gathered in 8-byte words where ``x``'s channels allow it: with ``copy`` a new
    contiguous tensor; with ``flat`` flattened (a view where the block is contiguous in ``x``)."""
    wide = _words(x)
    out = wide[index]
    if copy:
        out = out.clone(memory_format=torch.contiguous_format)
    if flat:
        out = out.reshape(-1)
    return out if wide is x else out.view(x.dtype)


def _owned(plan: RankPlan, shape: tuple[int, ...]) -> tuple:
    return (slice(None), *(slice(o, o + n) for o, n in zip(plan.offset, shape)))


def _runs(positions: tuple[int, ...]) -> list[tuple[int, int]]:
    """Sorted positions as maximal ``[first, stop)`` runs."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    return [(a, b) for a, b in runs]


def extended(x: torch.Tensor, plan: RankPlan) -> torch.Tensor:
    """``x``'s extended grid before the halo lands: the shard in place, and zeros where the exchange
    writes nothing (windows of owned queries never reach there, but a key tile loads them, and a
    non-finite value would poison the products)."""
    slabs = plan.unwritten
    shape = (x.shape[0], *plan.extended, *x.shape[-2:])
    ext = x.new_zeros(shape) if slabs is None else x.new_empty(shape)
    for axis, positions in enumerate(slabs or ()):
        for first, stop in _runs(positions):
            ext[(slice(None),) * (1 + axis) + (slice(first, stop),)] = 0
    assign(ext, _owned(plan, x.shape[1:-2]), x)
    return ext


def _block_shape(shape, t: Transfer) -> tuple[int, ...]:
    """Block ``t`` of a ``[B, *S, H, C]`` tensor of shape ``shape``."""
    return (shape[0], *(len(ix) for ix in t.index), *shape[-2:])


def _pack(xs, t: Transfer) -> torch.Tensor:
    """One message: the block ``t`` of every tensor of ``xs``, flattened and concatenated."""
    return torch.cat([take(x, selector(t.index, x.device), flat=True) for x in xs])


def _unpack(buf: torch.Tensor, shapes, t: Transfer):
    """The blocks of a message packed like :func:`_pack` from tensors of ``shapes``."""
    shapes = [_block_shape(s, t) for s in shapes]
    parts = buf.split([math.prod(s) for s in shapes])
    return [part.view(s) for part, s in zip(parts, shapes)]


def _post(sends, recvs, group) -> list:
    """Post every send and receive at once; ``(peer, tensor)`` pairs, peers as ranks of ``group``."""
    ops = [dist.P2POp(dist.isend, t, dist.get_global_rank(group, p), group) for p, t in sends]
    ops += [dist.P2POp(dist.irecv, t, dist.get_global_rank(group, p), group) for p, t in recvs]
    return dist.batch_isend_irecv(ops) if ops else []


def _account(direction: str, plan: RankPlan, sends, recvs) -> None:
    sent = sum(t.nbytes for _, t in sends)
    received = sum(t.nbytes for _, t in recvs)
    record(Exchange("halo", direction, plan.rank, sent, received, tuple(p for p, _ in recvs)))


def _message_numel(shapes, t: Transfer) -> int:
    return sum(math.prod(_block_shape(s, t)) for s in shapes)


class HaloExchange(torch.autograd.Function):
    """Shards ``[B, *S_local, H, C_i]`` (k and v: one message per peer carries both) -> their extended
    grids ``[B, *S_extended, H, C_i]``, each contiguous (see :mod:`natten.distributed.plan`)."""

    @staticmethod
    def forward(ctx, plan: RankPlan, group, *xs: torch.Tensor):
        ref = xs[0]
        sends = [(t.peer, _pack(xs, t)) for t in plan.send]
        shapes = [x.shape for x in xs]
        recvs = [(t.peer, ref.new_empty(_message_numel(shapes, t))) for t in plan.recv]
        pending = _post(sends, recvs, group)
        exts = [extended(x, plan) for x in xs]
        for req in pending:
            req.wait()
        for t, (_, buf) in zip(plan.recv, recvs):
            for ext, block in zip(exts, _unpack(buf, shapes, t)):
                assign(ext, selector(t.index, ext.device), block)
        _account("forward", plan, sends, recvs)
        ctx.plan, ctx.group, ctx.local = plan, group, [tuple(x.shape) for x in xs]
        return tuple(exts)

    @staticmethod
    def backward(ctx, *grad_exts: torch.Tensor):
        plan, group = ctx.plan, ctx.group
        grad_exts = [g.contiguous() for g in grad_exts]
        ref = grad_exts[0]
        sends = [(t.peer, _pack(grad_exts, t)) for t in plan.recv]
        recvs = [(t.peer, ref.new_empty(_message_numel(ctx.local, t))) for t in plan.send]
        pending = _post(sends, recvs, group)
        grads = [take(g, _owned(plan, shape[1:-2]), copy=True) for g, shape in zip(grad_exts, ctx.local)]
        for req in pending:
            req.wait()
        for t, (_, buf) in zip(plan.send, recvs):
            for grad, block in zip(grads, _unpack(buf, ctx.local, t)):
                grad[selector(t.index, grad.device)] += block  # positions are distinct within one block
        _account("backward", plan, sends, recvs)
        return (None, None, *grads)
