"""What the profiler compares: natten's fused op (the dispatcher's backend, or one forced backend:
``natten-<backend>``), dense SDPA with the equivalent mask, and the gather-based legacy module's
attention (natten-legacy).

Each implementation receives the same heads-last ``q, k, v`` values, converts them to its own layout
*outside* the timed region, and returns a :class:`Prepared` call whose output can be mapped back to
heads-last for the agreement check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from natten_kernels.backends import BACKENDS
from natten_kernels.dispatcher import NoBackendError
from torch.nn import functional as F

from natten import context
from natten import functional as natten_functional
from natten.functional.dispatch import problem_for, select_backend
from natten.functional.validation import normalize_params
from natten.profiler.problem import ProfileProblem

LEGACY_INSTALL_HINT = (
    "pip install natten-legacy (or natten[legacy]); from a checkout: pip install --no-deps -e ./packages/natten-legacy"
)
# Dense SDPA materializes [batch, heads, N, N] logits (plus the [N, N] mask); beyond this it is skipped.
DENSE_LIMIT_BYTES = 8 * 2**30
SDPA_LABEL = "dense SDPA + NA mask"
LEGACY_LABEL = "legacy module attention"


class Unavailable(Exception):
    """The implementation cannot run here; the message says why (and how to fix it)."""


@dataclass
class Prepared:
    label: str  # the row's name, e.g. "natten (cpu backend)"
    leaves: tuple[torch.Tensor, ...]  # tensors the backward differentiates
    forward: Callable[[], torch.Tensor]
    to_heads_last: Callable[[torch.Tensor], torch.Tensor]  # output -> [B, *S, H, D]


@dataclass(frozen=True)
class Implementation:
    key: str
    label: str  # the row's name when prepare() fails
    prepare: Callable[[ProfileProblem, tuple[torch.Tensor, ...], bool], Prepared]


def _leaf(t: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return t.detach().contiguous().requires_grad_(requires_grad)


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    """[B, *S, H, D] -> [B, H, *S, D]."""
    r = t.dim() - 3
    return t.permute(0, r + 1, *range(1, r + 1), r + 2)


def _heads_last(t: torch.Tensor) -> torch.Tensor:
    """[B, H, *S, D] -> [B, *S, H, D]."""
    r = t.dim() - 3
    return t.permute(0, *range(2, r + 2), 1, r + 2)


def backend_name(problem: ProfileProblem, requires_grad: bool = True) -> str:
    """The natten backend the dispatcher picks for this problem (raises NoBackendError when none fits)."""
    params = normalize_params(problem.rank, problem.kernel_size, problem.dilation, problem.stride, problem.is_causal)
    ref = torch.empty(0, dtype=problem.dtype, device=problem.device).requires_grad_(requires_grad)
    return select_backend(problem_for("fused", params, ref, problem.head_dim, problem.head_dim, (ref,))).name


def _natten(problem: ProfileProblem, qkv, requires_grad: bool, backend: str | None = None) -> Prepared:
    q, k, v = (_leaf(t, requires_grad) for t in qkv)
    na = getattr(natten_functional, f"na{problem.rank}d")
    args = (problem.kernel_size, problem.dilation, problem.is_causal)
    if backend is None:
        label = backend_name(problem, requires_grad)
        forward = lambda: na(q, k, v, *args, stride=problem.stride)
    else:
        label = backend
        _check_runs(problem, requires_grad, backend)

        def forward():
            with context.using_backend(backend, force=True):
                return na(q, k, v, *args, stride=problem.stride)

    return Prepared(label=f"natten ({label} backend)", leaves=(q, k, v), forward=forward, to_heads_last=lambda out: out)


def _check_runs(problem: ProfileProblem, requires_grad: bool, backend: str) -> None:
    with context.using_backend(backend, force=True):
        try:
            backend_name(problem, requires_grad)
        except NoBackendError as exc:
            raise Unavailable(str(exc).splitlines()[-1].strip(" -")) from exc


def neighborhood_mask(problem: ProfileProblem) -> torch.Tensor:
    """``[N, N]`` bool, True where query ``i`` attends key ``j`` (row-major tokens).

    Read from natten's own unfused qk op: with ``q = 1`` and key ``j`` holding the value ``j``, slot
    ``t`` of query ``i`` holds its key index, and ``-inf`` where causal masking removes it. Computed
    in float64 on CPU (exact for any index) and moved to the problem's device.
    """
    n = problem.tokens
    keys = torch.arange(n, dtype=torch.float64).reshape(1, 1, *problem.shape, 1)
    qk = getattr(natten_functional, f"na{problem.rank}d_qk")
    slots = qk(
        torch.ones_like(keys),
        keys,
        problem.kernel_size,
        problem.dilation,
        is_causal=problem.is_causal,
        stride=problem.stride,
    ).reshape(n, -1)
    valid = torch.isfinite(slots)
    rows = torch.arange(n)[:, None].expand_as(slots)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[rows[valid], slots[valid].long()] = True
    return mask.to(problem.device)


def _sdpa(problem: ProfileProblem, qkv, requires_grad: bool) -> Prepared:
    n = problem.tokens
    dense = problem.batch * problem.heads * n * n * max(torch.empty((), dtype=problem.dtype).element_size(), 4) + n * n
    if dense > DENSE_LIMIT_BYTES:
        raise Unavailable(
            f"dense attention over {n} tokens needs ~{dense / 2**30:.1f} GiB of logits "
            f"(limit {DENSE_LIMIT_BYTES / 2**30:.0f} GiB)"
        )
    mask = neighborhood_mask(problem)
    # [B, *S, H, D] -> [B, H, N, D]
    q, k, v = (_leaf(_heads_first(t).flatten(2, -2), requires_grad) for t in qkv)
    shape = (problem.batch, problem.heads, *problem.shape, problem.head_dim)
    return Prepared(
        label=SDPA_LABEL,
        leaves=(q, k, v),
        forward=lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        to_heads_last=lambda out: _heads_last(out.reshape(shape)),
    )


def _legacy(problem: ProfileProblem, qkv, requires_grad: bool) -> Prepared:
    try:
        import natten_legacy
    except ImportError as exc:
        raise Unavailable(f"natten-legacy is not installed: {LEGACY_INSTALL_HINT}") from exc
    cls = getattr(natten_legacy, f"LegacyNeighborhoodAttention{problem.rank}D")
    module = cls(
        problem.heads * problem.head_dim,
        problem.heads,
        problem.kernel_size,
        problem.dilation,
        problem.is_causal,
        stride=problem.stride,
    ).to(device=problem.device, dtype=problem.dtype)
    # The module's attention takes heads-first q, k, v with q already scaled.
    q, k, v = qkv
    q = q * problem.head_dim**-0.5
    q, k, v = (_leaf(_heads_first(t), requires_grad) for t in (q, k, v))
    spatial = list(problem.shape)
    return Prepared(
        label=LEGACY_LABEL,
        leaves=(q, k, v),
        forward=lambda: module._attention(q, k, v, spatial),
        to_heads_last=_heads_last,
    )


IMPLEMENTATIONS = {
    impl.key: impl
    for impl in (
        Implementation("natten", "natten", _natten),  # natten.functional.na{1,2,3}d, backend from the dispatcher
        Implementation("sdpa", SDPA_LABEL, _sdpa),  # dense attention with the equivalent boolean mask
        Implementation("legacy", LEGACY_LABEL, _legacy),  # natten_legacy's gather-based module attention
        *(  # natten with one fused backend forced (not in the default set)
            Implementation(f"natten-{b.name}", f"natten ({b.name} backend)", functools.partial(_natten, backend=b.name))
            for b in BACKENDS
            if "fused" in b.families and b.name != "meta"
        ),
    )
}
DEFAULT_IMPLEMENTATIONS = ("natten", "sdpa", "legacy")
