"""Walks the backends in order and picks the first that can run a problem."""

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
    reasons = []
    for backend in BACKENDS if backends is None else backends:
        why = backend.refusal(problem, disabled_kinds)
        if why is None:
            return backend
        reasons.append(f"  - {backend.name}: {why}")
    raise NoBackendError(f"natten has no backend for this problem ({problem.describe()}).\n" + "\n".join(reasons))


def usable_backends(device: str) -> list[tuple[Backend, str | None]]:
    """Every backend that targets ``device``, with the reason it is unusable (None when usable)."""
    return [(b, b.unavailable_reason()) for b in BACKENDS if device in b.devices]
