"""The differentiable halo exchange: a rank's shard -> its extended grid, holding every key/value its
queries attend (received point to point from their owners) and zeros where no owned query looks.

Backward returns the halo part of the gradient to the owners, who add it to their own (the reverse
transfers of the forward's). Transfers are posted together with ``torch.distributed.batch_isend_irecv``
(NCCL groups them; gloo runs them on its own threads), and the rank fills its extended grid with its
own shard while they are in flight.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from natten.distributed.accounting import Exchange, record
from natten.distributed.plan import RankPlan, Transfer


def selector(index: tuple[tuple[int, ...], ...], device) -> tuple:
    """Indexes the spatial axes of a ``[B, *S, H, C]`` tensor at the product of ``index``'s positions:
    slices where a position list is a contiguous run, an open mesh of index tensors otherwise."""
    if all(ix[-1] - ix[0] + 1 == len(ix) for ix in index):
        return (slice(None), *(slice(ix[0], ix[-1] + 1) for ix in index))
    rank = len(index)
    mesh = []
    for x, ix in enumerate(index):
        shape = [1] * rank
        shape[x] = len(ix)
        mesh.append(torch.tensor(ix, dtype=torch.long, device=device).view(shape))
    return (slice(None), *mesh)


def _owned(plan: RankPlan, shape: tuple[int, ...]) -> tuple:
    return (slice(None), *(slice(o, o + n) for o, n in zip(plan.offset, shape)))


def _block_shape(x: torch.Tensor, t: Transfer) -> tuple[int, ...]:
    return (x.shape[0], *(len(ix) for ix in t.index), *x.shape[-2:])


def _post(sends, recvs, group) -> list:
    """Post every send and receive at once; ``(peer, tensor)`` pairs, peers as ranks of ``group``."""
    ops = [dist.P2POp(dist.isend, t, dist.get_global_rank(group, p), group) for p, t in sends]
    ops += [dist.P2POp(dist.irecv, t, dist.get_global_rank(group, p), group) for p, t in recvs]
    return dist.batch_isend_irecv(ops) if ops else []


def _account(direction: str, plan: RankPlan, sends, recvs) -> None:
    sent = sum(t.nbytes for _, t in sends)
    received = sum(t.nbytes for _, t in recvs)
    record(Exchange("halo", direction, plan.rank, sent, received, tuple(p for p, _ in recvs)))


class HaloExchange(torch.autograd.Function):
    """``[B, *S_local, H, C]`` -> ``[B, *S_extended, H, C]`` (see :mod:`natten.distributed.plan`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: RankPlan, group):
        sends = [(t.peer, x[selector(t.index, x.device)].contiguous()) for t in plan.send]
        recvs = [(t.peer, x.new_empty(_block_shape(x, t))) for t in plan.recv]
        pending = _post(sends, recvs, group)
        ext = x.new_zeros((x.shape[0], *plan.extended, *x.shape[-2:]))
        ext[_owned(plan, x.shape[1:-2])] = x
        for req in pending:
            req.wait()
        for t, (_, buf) in zip(plan.recv, recvs):
            ext[selector(t.index, x.device)] = buf
        _account("forward", plan, sends, recvs)
        ctx.plan, ctx.group, ctx.local = plan, group, tuple(x.shape)
        return ext

    @staticmethod
    def backward(ctx, grad_ext: torch.Tensor):
        plan, group = ctx.plan, ctx.group
        grad_ext = grad_ext.contiguous()
        device = grad_ext.device
        sends = [(t.peer, grad_ext[selector(t.index, device)].contiguous()) for t in plan.recv]
        recvs = [(t.peer, grad_ext.new_empty(_block_shape(grad_ext, t))) for t in plan.send]
        pending = _post(sends, recvs, group)
        grad = grad_ext[_owned(plan, ctx.local[1:-2])].clone()
        for req in pending:
            req.wait()
        for t, (_, buf) in zip(plan.send, recvs):
            grad[selector(t.index, device)] += buf  # positions are distinct within one block
        _account("backward", plan, sends, recvs)
        return grad, None, None
