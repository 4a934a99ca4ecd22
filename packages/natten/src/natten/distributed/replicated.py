"""Inputs every rank holds whole (rpb, additional keys/values): identity forward, all-reduce (sum) of
the gradient in backward, so that every rank ends with the gradient of the sum of all ranks' losses —
the single-process gradient, as if the op had run once on the whole grid."""

from __future__ import annotations

import torch
import torch.distributed as dist


class ReplicatedGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def replicated(x: torch.Tensor | None, group) -> torch.Tensor | None:
    """``x`` with a summed gradient; untouched when it takes no gradient (no collective then)."""
    if x is None or not (x.requires_grad and torch.is_grad_enabled()):
        return x
    return ReplicatedGrad.apply(x, group)
