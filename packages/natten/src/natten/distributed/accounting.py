"""Bytes each rank actually sent and received, per exchange: what the tests hold to the window rule.

Every exchange (a halo exchange of k/v, or one all-to-all of the head-parallel method, forward or
backward) appends one :class:`Exchange` to the open :func:`collect` lists and replaces the one
:func:`last_exchange` returns. The counts are the ``nbytes`` of the tensors handed to
torch.distributed, a rank's own data excluded.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from natten.distributed.plan import Layout, rank_plan


@dataclass(frozen=True)
class Exchange:
    """One exchange on one rank: ``what`` is ``"halo"`` (k and v together) or ``"heads:<tensor>"``;
    ``direction`` is ``"forward"`` or ``"backward"``; ``peers`` the ranks (in the group) it received
    from."""

    what: str
    direction: str
    rank: int
    sent_bytes: int
    received_bytes: int
    peers: tuple[int, ...]


# Process-wide, not per thread: autograd runs CUDA backward nodes on its own device threads.
_lock = threading.Lock()
_sinks: list[list[Exchange]] = []
_last: list[Exchange] = []


def record(exchange: Exchange) -> None:
    with _lock:
        _last[:] = [exchange]
        for sink in _sinks:
            sink.append(exchange)


def last_exchange() -> Exchange | None:
    """The latest exchange this process ran, forward or backward."""
    with _lock:
        return _last[0] if _last else None


@contextlib.contextmanager
def collect() -> Iterator[list[Exchange]]:
    """``with collect() as log:`` - every exchange this process runs inside the block, in order."""
    log: list[Exchange] = []
    with _lock:
        _sinks.append(log)
    try:
        yield log
    finally:
        with _lock:
            _sinks.remove(log)


def predicted(
    method: str, layout: Layout, params: tuple, batch: int, shapes, itemsize: int, lse_itemsize: int = 0
) -> list[tuple[int, int]]:
    """``(sent, received)`` bytes of each rank's forward exchanges, from the plan alone (no run): the
    backward moves the same bytes the other way. ``shapes`` holds ``heads, kv_heads, head_dim,
    head_dim_v`` (natten's FusedShapes); ``lse_itemsize`` > 0 counts the head-parallel LSE transfer."""
    h, hk, d, dv = shapes.heads, shapes.kv_heads, shapes.head_dim, shapes.head_dim_v
    if method == "halo":
        site = batch * hk * (d + dv) * itemsize
        plans = [rank_plan(layout, params, r) for r in range(layout.world)]
        return [(p.send_sites * site, p.recv_sites * site) for p in plans]
    world = layout.world
    tokens = [math.prod(layout.local_shape(r)) for r in range(world)]
    qkv = batch * (h * d + hk * (d + dv)) // world * itemsize  # per token, one rank's heads
    out = batch * h * (dv * itemsize + lse_itemsize) // world
    total = sum(tokens)
    return [((world - 1) * n * qkv + (total - n) * out, (total - n) * qkv + (world - 1) * n * out) for n in tokens]
