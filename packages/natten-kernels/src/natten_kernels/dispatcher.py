"""Walks the backends in order: the first that can run a problem is the default, the others that can are
the alternatives the autotuner may time (natten.functional)."""

from __future__ import annotations

from collections.abc import Iterable

from natten_kernels.backends import BACKENDS, Backend, Problem


class NoBackendError(NotImplementedError):
    """No registered backend can run the problem; the message lists every backend's reason."""


def select(
    problem: Problem,
    disabled_kinds: frozenset[str] = frozenset(),
    backends: Iterable[Backend] | None = None,
) -> Backend:
    """The first backend that can run ``problem``."""
    return candidates(problem, disabled_kinds, backends, first=True)[0]


def candidates(
    problem: Problem,
    disabled_kinds: frozenset[str] = frozenset(),
    backends: Iterable[Backend] | None = None,
    first: bool = False,
) -> list[Backend]:
    """Every backend that can run ``problem``, in dispatch order (only the first with ``first``);
    NoBackendError, listing each backend's reason, when none can."""
    fit, reasons = [], []
    for backend in BACKENDS if backends is None else backends:
        why = backend.refusal(problem, disabled_kinds)
        if why is None:
            fit.append(backend)
            if first:
                break
        else:
            reasons.append(f"  - {backend.name}: {why}")
    if not fit:
        raise NoBackendError(f"natten has no backend for this problem ({problem.describe()}).\n" + "\n".join(reasons))
    return fit


def usable_backends(device: str) -> list[tuple[Backend, str | None]]:
    """Every backend that targets ``device``, with the reason it is unusable (None when usable)."""
    return [(b, b.unavailable_reason()) for b in BACKENDS if device in b.devices]
