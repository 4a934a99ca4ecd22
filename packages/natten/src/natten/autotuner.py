"""The autotuner: time each candidate kernel configuration once per problem and cache the fastest.

A problem is identified by everything that can change the best configuration: backend, op, shapes,
dtype, device and the neighborhood parameters. The cache is process-wide and guarded by a lock, so
concurrent threads tune a problem once; it is never consulted under ``torch.compile`` tracing (the
default configuration is used there) nor in deterministic mode (context.py refuses the autotuner).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence

import torch

logger = logging.getLogger("natten")

_cache: dict[Hashable, list[int]] = {}
_lock = threading.Lock()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(run: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        run()
    _synchronize(device)
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        _synchronize(device)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def tune(
    key: Hashable,
    candidates: Sequence[list[int]],
    run: Callable[[list[int]], object],
    device: torch.device,
    warmup: int,
    steps: int,
) -> list[int]:
    """The fastest of ``candidates`` for ``key``; times them on first use, then answers from the cache."""
    with _lock:
        if key in _cache:
            return _cache[key]
        if len(candidates) == 1:
            _cache[key] = list(candidates[0])
            return _cache[key]
        with torch.no_grad():
            timings = [(_time(lambda c=c: run(c), device, warmup, steps), list(c)) for c in candidates]
        best = min(timings, key=lambda t: t[0])[1]
        logger.debug("natten autotuner: %s -> %s (%s)", key, best, timings)
        _cache[key] = best
        return best


def cached_configs() -> dict[Hashable, list[int]]:
    """A copy of the cache: problem key -> chosen configuration."""
    with _lock:
        return dict(_cache)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
