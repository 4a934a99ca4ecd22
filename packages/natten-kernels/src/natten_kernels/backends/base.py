"""Declarative backends: what each implementation supports (so the dispatcher can explain refusals)
and the ops it runs (so the API calls what the dispatcher picked)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

# Feature names a Problem may need and a Backend may declare.
FEATURES = (
    "causal",
    "dilation",
    "stride",
    "rpb",
    "additional_kv",
    "gqa",
    "backward",
    "forward_ad",
    "deterministic_backward",
    "query_box",  # queries: a box of the key grid at an offset (op argument query_offset)
)

# The float dtypes natten's ops take; tensor-core matmuls (tl.dot) take all but float64.
FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
TENSOR_CORE_DTYPES = FLOAT_DTYPES - {torch.float64}


@dataclass(frozen=True)
class Problem:
    """What one call needs from a backend; built by natten.functional after validation."""

    family: str  # "fused" or "unfused"
    device: str  # torch device type: "cpu", "cuda", ...
    dtype: torch.dtype
    rank: int
    head_dim: int
    head_dim_v: int
    features: frozenset[str] = frozenset()

    def describe(self) -> str:
        feats = ",".join(sorted(self.features)) or "none"
        return (
            f"{self.family} {self.rank}d on {self.device}, {str(self.dtype).removeprefix('torch.')}, "
            f"head_dim={self.head_dim}, head_dim_v={self.head_dim_v}, features: {feats}"
        )


@dataclass(frozen=True)
class TuningInfo:
    """What a backend needs to choose a kernel configuration (the op's trailing ``config`` argument)."""

    batch: int
    heads: int
    kv_heads: int
    tokens: int
    head_dim: int
    kv_parallel: bool = False
    memory_preference: str = "default"


def _default_configs(info: TuningInfo) -> list[list[int]]:
    return [[]]


@dataclass(frozen=True)
class Backend:
    name: str
    families: frozenset[str]
    devices: frozenset[str]
    dtypes: frozenset[torch.dtype]
    features: frozenset[str]
    ranks: frozenset[int] = frozenset({1, 2, 3})
    max_head_dim: int | None = None
    head_dim_multiple: int = 1
    # Kinds switched off by context toggles ("gemm", "tiled"), as the seeds' dispatcher settings do.
    kinds: frozenset[str] = frozenset()
    min_compute_capability: int = 0  # CUDA backends: SM version as 10 * major + minor
    # Returns None when usable in this process, else the reason it is not.
    unavailable_reason: Callable[[], str | None] = field(default=lambda: None, compare=False)
    # Fused-op configurations: the first entry is the default under the context flags, all of them are
    # the autotuner's candidates. ``[]`` lets the kernel decide.
    forward_configs: Callable[[TuningInfo], list[list[int]]] = field(default=_default_configs, compare=False)
    backward_configs: Callable[[TuningInfo], list[list[int]]] = field(default=_default_configs, compare=False)
    # Whether the autotuner may time it against the other backends that fit (not a dense fallback whose
    # memory grows with tokens^2).
    autotune: bool = True
    # What the unfused ops pass as ``config`` so that the device's kernel runs this backend's variant.
    unfused_config: tuple[int, ...] = ()
    # The ops this backend runs are ``natten::<op_prefix><op>``: its own names, or (empty prefix) the
    # library's ops, whose kernel torch picks by device. ``kernels`` maps op -> "module:function" for
    # the kernels it registers itself on its devices (imported at the first call; ops/register.py).
    op_prefix: str = ""
    kernels: Mapping[str, str] = field(default_factory=dict, compare=False)

    def op(self, name: str):
        """The op this backend runs for ``name`` ("na_fused_forward", "na_qk_forward", ...)."""
        return getattr(torch.ops.natten, self.op_prefix + name)

    def refusal(self, problem: Problem, disabled_kinds: frozenset[str] = frozenset()) -> str | None:
        """None if this backend can run ``problem``, else a one-line reason."""
        if problem.family not in self.families:
            return f"no {problem.family} kernels"
        if problem.device not in self.devices:
            return f"runs on {'/'.join(sorted(self.devices))}, not {problem.device}"
        off = self.kinds & disabled_kinds
        if off:
            return f"{'/'.join(sorted(off))} kernels are disabled by the dispatcher settings"
        why = self.unavailable_reason()
        if why:
            return why
        if problem.dtype not in self.dtypes:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes))
            return f"dtype {str(problem.dtype).removeprefix('torch.')} not supported (supports {names})"
        if problem.rank not in self.ranks:
            return f"{problem.rank}d not supported"
        for d in {problem.head_dim, problem.head_dim_v}:
            if self.max_head_dim is not None and d > self.max_head_dim:
                return f"head dim {d} > {self.max_head_dim}"
            if d % self.head_dim_multiple:
                return f"head dim {d} is not a multiple of {self.head_dim_multiple}"
        missing = problem.features - self.features
        if missing:
            return f"does not support {', '.join(sorted(missing))}"
        return None

    def describe(self) -> str:
        dtypes = ", ".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes))
        return (
            f"{self.name}: {'/'.join(sorted(self.families))} on {'/'.join(sorted(self.devices))}; "
            f"dtypes {dtypes}; features {', '.join(sorted(self.features))}"
        )
