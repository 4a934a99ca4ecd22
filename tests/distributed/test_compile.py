"""natten.distributed under torch.compile: a compiled function calling the sharded op (halo and heads)
gives every rank the single-process result and gradients, in a spawned gloo world of 2."""

from __future__ import annotations

import torch

from natten.distributed.launch import spawn

SPATIAL, KERNEL, DILATION = (12, 10), (5, 3), (1, 2)


def _compiled_rank(rank: int, world: int, device) -> dict:
    import natten.distributed as nd
    import natten.functional as F

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, *SPATIAL, 2, 8, dtype=torch.float64, device=device) for _ in range(3))
    go = torch.randn_like(q)
    n = SPATIAL[0] // world
    mine = (slice(None), slice(rank * n, (rank + 1) * n))
    errors = {}
    for method in ("halo", "heads"):
        local = [x[mine].clone().requires_grad_() for x in (q, k, v)]

        def fn(a, b, c, method=method):
            return nd.na2d(a, b, c, KERNEL, dilation=DILATION, method=method)

        torch._dynamo.reset()
        out = torch.compile(fn)(*local)
        out.backward(go[mine])
        whole = [x.clone().requires_grad_() for x in (q, k, v)]
        ref = F.na2d(*whole, KERNEL, dilation=DILATION)
        ref.backward(go)
        errors[method] = max(
            float((out - ref[mine]).abs().max()),
            *(float((a.grad - b.grad[mine]).abs().max()) for a, b in zip(local, whole)),
        )
    return errors


def test_compiled_sharded_op_matches_single_process():
    for rank, errors in enumerate(spawn(2, _compiled_rank, timeout=600)):
        assert set(errors) == {"halo", "heads"}
        assert max(errors.values()) <= 1e-12, f"rank {rank}: {errors}"
