"""Process-wide settings: fused vs unfused Modules, autotuner, KV parallelism, memory preference,
and the dispatcher's GEMM/tiled toggles.

KV parallelism and the autotuner make results depend on scheduling, so they cannot be combined with
``torch.use_deterministic_algorithms(True)``: enabling them in deterministic mode warns and leaves
them off, and turning deterministic mode on later makes their getters answer False.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from natten.functional.validation import check_bool

logger = logging.getLogger("natten")

MEMORY_PREFERENCES = ("default", "strict", "unrestricted")


@dataclass
class _Settings:
    fused_na: bool = True
    kv_parallel: bool = False
    autotune_forward: bool = False
    autotune_backward: bool = False
    autotune_warmup_steps: tuple[int, int] = (5, 5)  # forward, backward
    autotune_steps: tuple[int, int] = (5, 5)
    memory_preference: str = "default"
    gemm_na: bool = True
    tiled_na: bool = True


_settings = _Settings()


def _deterministic() -> bool:
    return torch.are_deterministic_algorithms_enabled()


# Fused neighborhood attention ------------------------------------------------------------------


def use_fused_na(mode: bool = True, kv_parallel: bool = False) -> None:
    """Make the NeighborhoodAttention Modules use fused kernels (``mode=True``, the default) or the
    unfused qk -> softmax -> av path; optionally enable KV parallelism in the fused backward.
    Both arguments must be bools (TypeError otherwise)."""
    mode = check_bool(mode, "use_fused_na: mode")
    kv_parallel = check_bool(kv_parallel, "use_fused_na: kv_parallel")
    _settings.fused_na = mode
    use_kv_parallelism_in_fused_na(mode and kv_parallel)


def enable_fused_na() -> None:
    use_fused_na(True)


def disable_fused_na() -> None:
    use_fused_na(False)


def is_fused_na_enabled() -> bool:
    return _settings.fused_na


# KV parallelism ----------------------------------------------------------------------------------


def use_kv_parallelism_in_fused_na(mode: bool = True) -> None:
    """Let the fused backward parallelize over key/value tiles: faster, more memory, not deterministic."""
    mode = check_bool(mode, "use_kv_parallelism_in_fused_na: mode")
    if mode and _deterministic():
        logger.warning(
            "KV parallelism makes the fused backward non-deterministic and PyTorch's deterministic "
            "mode is on; KV parallelism stays disabled."
        )
        _settings.kv_parallel = False
        return
    _settings.kv_parallel = mode


def is_kv_parallelism_in_fused_na_enabled() -> bool:
    return _settings.kv_parallel and not _deterministic()


# Memory preference -------------------------------------------------------------------------------


def set_memory_usage_preference(pref: str = "default") -> None:
    """How much extra memory KV parallelism may use: "default", "strict" (less) or "unrestricted"."""
    if pref not in MEMORY_PREFERENCES:
        raise ValueError(
            f"set_memory_usage_preference: pref must be one of {', '.join(map(repr, MEMORY_PREFERENCES))}; got {pref!r}"
        )
    _settings.memory_preference = pref


def get_memory_usage_preference() -> str:
    return _settings.memory_preference


def is_memory_usage_default() -> bool:
    return _settings.memory_preference == "default"


def is_memory_usage_strict() -> bool:
    return _settings.memory_preference == "strict"


def is_memory_usage_unrestricted() -> bool:
    return _settings.memory_preference == "unrestricted"


# Autotuner ---------------------------------------------------------------------------------------


def use_autotuner(
    forward_pass: bool = False,
    backward_pass: bool = False,
    warmup_steps_forward: int = 5,
    warmup_steps_backward: int = 5,
    steps_forward: int = 5,
    steps_backward: int = 5,
) -> None:
    """Benchmark kernel configurations once per problem and cache the fastest (fused ops)."""
    forward_pass = check_bool(forward_pass, "use_autotuner: forward_pass")
    backward_pass = check_bool(backward_pass, "use_autotuner: backward_pass")
    for name, value in (
        ("warmup_steps_forward", warmup_steps_forward),
        ("warmup_steps_backward", warmup_steps_backward),
        ("steps_forward", steps_forward),
        ("steps_backward", steps_backward),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"use_autotuner: {name} must be a positive int; got {value!r}")
    if (forward_pass or backward_pass) and _deterministic():
        logger.warning("The autotuner cannot be used with PyTorch's deterministic mode; it stays disabled.")
        forward_pass = backward_pass = False
    _settings.autotune_forward = forward_pass
    _settings.autotune_backward = backward_pass
    _settings.autotune_warmup_steps = (warmup_steps_forward, warmup_steps_backward)
    _settings.autotune_steps = (steps_forward, steps_backward)


def disable_autotuner() -> None:
    use_autotuner(False, False)


def is_autotuner_enabled_for_forward() -> bool:
    return _settings.autotune_forward and not _deterministic()


def is_autotuner_enabled_for_backward() -> bool:
    return _settings.autotune_backward and not _deterministic()


def is_autotuner_enabled() -> bool:
    return is_autotuner_enabled_for_forward() or is_autotuner_enabled_for_backward()


def get_autotuner_steps() -> dict[str, tuple[int, int]]:
    """Warm-up and timed steps as (forward, backward)."""
    return {"warmup": _settings.autotune_warmup_steps, "steps": _settings.autotune_steps}


# Dispatcher toggles ------------------------------------------------------------------------------


def enable_gemm_na() -> None:
    """Allow dispatching to tensor-core (GEMM) kernels; not a guarantee that one is chosen."""
    _settings.gemm_na = True


def disable_gemm_na() -> None:
    """Dispatch only to kernels that do exact CUDA-core / CPU arithmetic."""
    _settings.gemm_na = False


def is_gemm_na_enabled() -> bool:
    return _settings.gemm_na


def enable_tiled_na() -> None:
    _settings.tiled_na = True


def disable_tiled_na() -> None:
    """Dispatch only to non-tiled kernels."""
    _settings.tiled_na = False


def is_tiled_na_enabled() -> bool:
    return _settings.tiled_na


def disabled_backend_kinds() -> frozenset[str]:
    """Backend kinds the dispatcher must skip under the current toggles."""
    off = set()
    if not _settings.gemm_na:
        off.add("gemm")
    if not _settings.tiled_na:
        off.add("tiled")
    return frozenset(off)


def reset() -> None:
    """Restore every setting to its default (used by tests)."""
    global _settings
    _settings = _Settings()
