"""The autotuner: time each candidate kernel configuration once per problem and cache the fastest.

A problem is identified by what can change the kernels' speed and so the best configuration
(``natten.autograd.fused.problem_key``): op, shapes, strides, dtype, device, the neighborhood
parameters, which optional tensors are present, the candidate configurations, and the sign of the
scale (a Triton path depends on ``scale <= 0``) but not its value: a model called with many scales
tunes each shape once.

The cache is a process-wide LRU of at most ``MAX_ENTRIES`` problems (the least recently used one is
evicted, so a long run over ever-new shapes keeps bounded memory and a re-seen evicted problem is
simply tuned again), guarded by a lock so that concurrent threads tune a problem once. It is never
consulted under ``torch.compile`` tracing (the default configuration is used there) nor in
deterministic mode (context.py refuses the autotuner).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

logger = logging.getLogger("natten")

MAX_ENTRIES = 512  # problems kept in the cache; the least recently used one is evicted beyond it

_cache: OrderedDict[Hashable, object] = OrderedDict()
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
    candidates: Sequence,
    run: Callable[[object], object],
    device: torch.device,
    warmup: int,
    steps: int,
):
    """The fastest of ``candidates`` (configurations, or (backend, configuration) pairs) for ``key``;
    times them on first use, then answers from the cache. A candidate that raises (one that cannot
    compile or run this problem) is skipped; if all raise, the first error is raised."""
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        if len(candidates) == 1:
            best = candidates[0]
        else:
            timings, errors = [], []
            with torch.no_grad():
                for i, c in enumerate(candidates):
                    try:
                        timings.append((_time(lambda c=c: run(c), device, warmup, steps), i))
                    except Exception as exc:  # a candidate this problem cannot compile or run is skipped
                        errors.append(exc)
                        logger.debug("natten autotuner: %s: candidate %s failed: %s", key, c, exc)
            if not timings:
                raise errors[0]
            best = candidates[min(timings)[1]]
            logger.debug("natten autotuner: %s -> %s (%s)", key, best, timings)
        _cache[key] = best
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
        return best


def cached_configs() -> dict[Hashable, object]:
    """A copy of the cache: problem key -> chosen configuration (or backend)."""
    with _lock:
        return dict(_cache)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
