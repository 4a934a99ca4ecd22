"""Wall-clock timing of a forward (and its backward): medians after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: str) -> None:
    """Wait for queued device work so host timers measure it (no-op on CPU)."""
    kind = torch.device(device).type
    if kind != "cpu":
        getattr(torch, kind).synchronize()


@dataclass
class Samples:
    forward_ms: list[float]
    backward_ms: list[float]  # empty when the backward was not timed
    output: torch.Tensor  # the last forward's output (detached)

    @property
    def forward_median(self) -> float:
        return statistics.median(self.forward_ms)

    @property
    def backward_median(self) -> float | None:
        return statistics.median(self.backward_ms) if self.backward_ms else None


def time_forward_backward(
    forward: Callable[[], torch.Tensor],
    leaves: tuple[torch.Tensor, ...],
    *,
    device: str,
    backward: bool = True,
    warmup: int = 1,
    iters: int = 10,
    max_seconds: float = 3.0,
) -> Samples:
    """Run ``warmup`` untimed then up to ``iters`` timed iterations of forward (+ backward).

    With ``backward``, each iteration times the forward with autograd recording (as in training) and
    then ``torch.autograd.grad`` of the output into ``leaves`` against a fixed random gradient.
    Without it, the forward runs under ``torch.inference_mode``. Timing stops early once the timed
    iterations have used ``max_seconds`` (at least one is always timed), so slow baselines stay cheap.
    """
    forward_ms: list[float] = []
    backward_ms: list[float] = []
    grad_out = None
    spent = 0.0
    for i in range(warmup + max(iters, 1)):
        timed = i >= warmup
        if timed and forward_ms and spent >= max_seconds:
            break
        synchronize(device)
        t0 = time.perf_counter()
        with torch.enable_grad() if backward else torch.inference_mode():
            out = forward()
        synchronize(device)
        t1 = time.perf_counter()
        if backward:
            if grad_out is None:
                grad_out = torch.randn_like(out)
            torch.autograd.grad(out, leaves, grad_out)
            synchronize(device)
        t2 = time.perf_counter()
        if timed:
            spent += t2 - t0
            forward_ms.append((t1 - t0) * 1e3)
            if backward:
                backward_ms.append((t2 - t1) * 1e3)
    return Samples(forward_ms, backward_ms, out.detach())
