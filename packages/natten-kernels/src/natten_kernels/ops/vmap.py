"""vmap rules of every ``natten::`` op (``torch.func.vmap``, ``jacrev``, ``jacfwd``).

One generic rule: the op runs once per vmapped sample and the results are stacked. It is exact for
any combination of batched arguments (the batch dim of the op's own ``batch`` axis cannot absorb a
vmapped rpb, whose gradient sums over it), and meant for functorch transforms on small problems
(Jacobians, per-sample checks), not for speed: run a batched problem through the batch axis instead.
"""

from __future__ import annotations

import torch


def per_sample(op):
    def rule(info, in_dims, *args):
        batched = [isinstance(a, torch.Tensor) and d is not None for a, d in zip(args, in_dims)]
        outs = []
        for i in range(info.batch_size):
            outs.append(op(*(a.select(d, i) if b else a for a, d, b in zip(args, in_dims, batched))))
        if isinstance(outs[0], torch.Tensor):
            return torch.stack(outs), 0
        return tuple(torch.stack(parts) for parts in zip(*outs)), (0,) * len(outs[0])

    return rule
