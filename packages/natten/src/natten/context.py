"""Process-wide settings: fused vs unfused Modules, autotuner, KV parallelism, memory preference,
the dispatcher's GEMM/tiled toggles, TF32, and the names NATTEN 0.17 code calls.

KV parallelism and the autotuner make results depend on scheduling, so they cannot be combined with
``torch.use_deterministic_algorithms(True)``: enabling them in deterministic mode warns
(``warnings.warn``, so ``warnings`` filters see it) and leaves them off, and turning deterministic
mode on later makes their getters answer False.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from enum import Enum

import torch
from natten_kernels import precision

from natten.functional.validation import check_bool


class MemoryUsagePreference(str, Enum):
    """How much extra memory KV parallelism may use (NATTEN 0.17's enum; its members equal the strings)."""

    Default = "default"
    Strict = "strict"
    Unrestricted = "unrestricted"


MEMORY_PREFERENCES = tuple(p.value for p in MemoryUsagePreference)


@dataclass
class _Settings:
    fused_na: bool = True
    kv_parallel: bool = False
    memory_preference: MemoryUsagePreference = MemoryUsagePreference.Default
    gemm_na: bool = True
    tiled_na: bool = True
    deterministic: bool = False  # natten's own deterministic mode (NATTEN 0.17), beside PyTorch's
    backend: str | None = None  # the backend the dispatcher tries first (use_backend)
    backend_forced: bool = False  # ... and the only one it may use


_settings = _Settings()


class AutotunerContext:
    """The autotuner's settings (NATTEN 0.17's class, kept for its code: ``AutotunerContext.reset()``,
    ``AutotunerContext.steps_forward``, ...). Set them through :func:`use_autotuner`."""

    enabled_for_forward: bool = False
    enabled_for_backward: bool = False
    thorough_mode_forward: bool = False
    thorough_mode_backward: bool = False
    warmup_steps_forward: int = 5
    warmup_steps_backward: int = 5
    steps_forward: int = 5
    steps_backward: int = 5

    @staticmethod
    def reset() -> None:
        for name, value in vars(_AutotunerDefaults).items():
            if not name.startswith("_"):
                setattr(AutotunerContext, name, value)


class _AutotunerDefaults:
    enabled_for_forward = enabled_for_backward = thorough_mode_forward = thorough_mode_backward = False
    warmup_steps_forward = warmup_steps_backward = steps_forward = steps_backward = 5


class NattenContext:
    """NATTEN 0.17's other settings class, kept for its code: ``NattenContext.reset()`` restores every
    setting but the autotuner's (see :class:`AutotunerContext`)."""

    @staticmethod
    def reset() -> None:
        global _settings
        _settings = _Settings()
        precision.set_tf32(None)


def deterministic() -> bool:
    """Whether results must be deterministic: PyTorch's deterministic mode or natten's own."""
    return torch.are_deterministic_algorithms_enabled() or _settings.deterministic


def _refuse_in_natten_deterministic_mode(what: str) -> None:
    if _settings.deterministic:
        raise RuntimeError(
            f"natten's deterministic mode is on (natten.use_deterministic_algorithms), and {what} is not "
            "deterministic; turn the mode off first"
        )


# Fused neighborhood attention ------------------------------------------------------------------


def use_fused_na(
    mode: bool = True, kv_parallel: bool = False, use_flex_attention: bool = False, force_flex_attention: bool = False
) -> None:
    """Make the NeighborhoodAttention Modules use fused kernels (``mode=True``, the default) or the
    unfused qk -> softmax -> av path; optionally enable KV parallelism in the fused backward, and
    (NATTEN 0.17's arguments) prefer or force the FlexAttention backend for the fused ops
    (:func:`use_backend`). Every argument must be a bool (TypeError otherwise)."""
    mode = check_bool(mode, "use_fused_na: mode")
    kv_parallel = check_bool(kv_parallel, "use_fused_na: kv_parallel")
    use_flex = check_bool(use_flex_attention, "use_fused_na: use_flex_attention")
    force_flex = check_bool(force_flex_attention, "use_fused_na: force_flex_attention")
    _settings.fused_na = mode
    use_kv_parallelism_in_fused_na(mode and kv_parallel)
    if use_flex or force_flex:
        use_backend("flex", force=force_flex)


def use_backend(name: str | None, force: bool = False) -> None:
    """Make the dispatcher try backend ``name`` first (``python -m natten.info`` lists them), falling
    back to the others where it cannot run a problem; with ``force=True`` use only it (a problem it
    cannot run raises NotImplementedError with its reason). A name also selects the backends named
    ``<name>-<device>`` (``"flex"``: ``flex`` on CUDA and ``flex-cpu``). It applies to the op family
    (fused or unfused) the backend has. ``None`` restores the default order.

    Raises:
        ValueError: ``name`` is not a registered backend.
    """
    from natten_kernels.backends import BACKENDS

    force = check_bool(force, "use_backend: force")
    names = [b.name for b in BACKENDS]
    groups = {b.name.removesuffix(f"-{d}") for b in BACKENDS for d in b.devices}  # "dense" for "dense-cpu"
    if name is not None and name not in names and name not in groups:
        raise ValueError(f"use_backend: name must be one of {sorted(set(names) | groups)} or None, got {name!r}")
    _settings.backend, _settings.backend_forced = name, force and name is not None


@contextlib.contextmanager
def using_backend(name: str | None, force: bool = False):
    """:func:`use_backend` for the ``with`` block only; the previous choice comes back after it."""
    before = preferred_backend()
    use_backend(name, force)
    try:
        yield
    finally:
        use_backend(*before)


def preferred_backend() -> tuple[str | None, bool]:
    """``(name, forced)`` set by :func:`use_backend`."""
    return _settings.backend, _settings.backend_forced


def use_flex_attention() -> None:
    """NATTEN 0.17: prefer the FlexAttention backend for the fused ops (``use_backend("flex")``)."""
    use_backend("flex")


def force_flex_attention() -> None:
    """NATTEN 0.17: use only the FlexAttention backend for the fused ops (``use_backend("flex", force=True)``)."""
    use_backend("flex", force=True)


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
    if mode:
        _refuse_in_natten_deterministic_mode("KV parallelism")
    if mode and deterministic():
        warnings.warn(
            "KV parallelism makes the fused backward non-deterministic and PyTorch's deterministic "
            "mode is on; KV parallelism stays disabled.",
            UserWarning,
            stacklevel=2,
        )
        _settings.kv_parallel = False
        return
    _settings.kv_parallel = mode


def is_kv_parallelism_in_fused_na_enabled() -> bool:
    return _settings.kv_parallel and not deterministic()


# Memory preference -------------------------------------------------------------------------------


def set_memory_usage_preference(pref: str | MemoryUsagePreference = "default") -> None:
    """How much extra memory KV parallelism may use: "default", "strict" (less) or "unrestricted"
    (or the :class:`MemoryUsagePreference` member)."""
    if pref not in MEMORY_PREFERENCES:
        raise ValueError(
            f"set_memory_usage_preference: pref must be one of {', '.join(map(repr, MEMORY_PREFERENCES))}; got {pref!r}"
        )
    _settings.memory_preference = MemoryUsagePreference(pref)


def get_memory_usage_preference() -> MemoryUsagePreference:
    """The current preference: a :class:`MemoryUsagePreference`, equal to its string ("default", ...)."""
    return _settings.memory_preference


def is_memory_usage_default() -> bool:
    return _settings.memory_preference == "default"


def is_memory_usage_strict() -> bool:
    return _settings.memory_preference == "strict"


def is_memory_usage_unrestricted() -> bool:
    return _settings.memory_preference == "unrestricted"


# Autotuner ---------------------------------------------------------------------------------------


THOROUGH_CANDIDATES = 4  # without thorough mode: the default and the three best-rated configurations


def use_autotuner(
    forward_pass: bool | None = None,
    backward_pass: bool | None = None,
    thorough_mode_forward: bool | None = None,
    thorough_mode_backward: bool | None = None,
    warmup_steps_forward: int | None = None,
    warmup_steps_backward: int | None = None,
    steps_forward: int | None = None,
    steps_backward: int | None = None,
) -> None:
    """Benchmark kernel configurations once per problem and cache the fastest (fused ops).

    NATTEN 0.17's signature: an argument left ``None`` keeps its current setting. Thorough mode times
    every candidate configuration of the backend; without it, the default and the
    ``THOROUGH_CANDIDATES - 1`` best-rated ones. Steps are positive ints (default 5 warm-up, 5 timed)."""
    flags = {
        "forward_pass": forward_pass,
        "backward_pass": backward_pass,
        "thorough_mode_forward": thorough_mode_forward,
        "thorough_mode_backward": thorough_mode_backward,
    }
    flags = {name: None if v is None else check_bool(v, f"use_autotuner: {name}") for name, v in flags.items()}
    steps = {
        "warmup_steps_forward": warmup_steps_forward,
        "warmup_steps_backward": warmup_steps_backward,
        "steps_forward": steps_forward,
        "steps_backward": steps_backward,
    }
    for name, value in steps.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"use_autotuner: {name} must be a positive int; got {value!r}")
    tuner = AutotunerContext
    fwd = tuner.enabled_for_forward if flags["forward_pass"] is None else flags["forward_pass"]
    bwd = tuner.enabled_for_backward if flags["backward_pass"] is None else flags["backward_pass"]
    if flags["forward_pass"] or flags["backward_pass"]:
        _refuse_in_natten_deterministic_mode("the autotuner")
    if (fwd or bwd) and deterministic():
        warnings.warn(
            "The autotuner cannot be used with PyTorch's deterministic mode; it stays disabled.",
            UserWarning,
            stacklevel=2,
        )
        fwd = bwd = False
    tuner.enabled_for_forward, tuner.enabled_for_backward = fwd, bwd
    for name in ("thorough_mode_forward", "thorough_mode_backward"):
        if flags[name] is not None:
            setattr(tuner, name, flags[name])
    for name, value in steps.items():
        if value is not None:
            setattr(tuner, name, value)


def disable_autotuner() -> None:
    use_autotuner(False, False, False, False)


def is_autotuner_thorough_for_forward() -> bool:
    return AutotunerContext.thorough_mode_forward


def is_autotuner_thorough_for_backward() -> bool:
    return AutotunerContext.thorough_mode_backward


def is_autotuner_enabled_for_forward() -> bool:
    return AutotunerContext.enabled_for_forward and not deterministic()


def is_autotuner_enabled_for_backward() -> bool:
    return AutotunerContext.enabled_for_backward and not deterministic()


def is_autotuner_enabled() -> bool:
    return is_autotuner_enabled_for_forward() or is_autotuner_enabled_for_backward()


def get_autotuner_steps() -> dict[str, tuple[int, int]]:
    """Warm-up and timed steps as (forward, backward)."""
    t = AutotunerContext
    return {"warmup": (t.warmup_steps_forward, t.warmup_steps_backward), "steps": (t.steps_forward, t.steps_backward)}


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


def use_gemm_na(mode: bool = True) -> None:
    """NATTEN 0.17: allow (True) or skip (False) tensor-core (GEMM) backends in the dispatcher."""
    _settings.gemm_na = check_bool(mode, "use_gemm_na: mode")


def use_tiled_na(mode: bool = True) -> None:
    """NATTEN 0.17: allow (True) or skip (False) tiled backends in the dispatcher."""
    _settings.tiled_na = check_bool(mode, "use_tiled_na: mode")


def use_tf32_in_gemm_na(mode: bool = True) -> None:
    """Whether float32 inputs may use TF32 tensor-core math in natten's GPU kernels (natten's own
    switch; until it is called they follow ``torch.backends.cuda.matmul.allow_tf32``)."""
    precision.set_tf32(check_bool(mode, "use_tf32_in_gemm_na: mode"))


def is_tf32_in_gemm_na_enabled() -> bool:
    return precision.tf32_enabled()


def enable_tf32() -> bool:
    """NATTEN 0.17 (deprecated there): ``use_tf32_in_gemm_na(True)``; returns the new state."""
    use_tf32_in_gemm_na(True)
    return is_tf32_in_gemm_na_enabled()


def disable_tf32() -> bool:
    """NATTEN 0.17 (deprecated there): ``use_tf32_in_gemm_na(False)``; returns the new state."""
    use_tf32_in_gemm_na(False)
    return is_tf32_in_gemm_na_enabled()


def use_deterministic_algorithms(mode: bool = True) -> None:
    """natten's own deterministic mode (NATTEN 0.17), independent of PyTorch's: KV parallelism and the
    autotuner are refused with a RuntimeError while it is on (under PyTorch's mode they are refused
    with a warning), and the fused backward is the deterministic one. Turning it on disables both."""
    mode = check_bool(mode, "use_deterministic_algorithms: mode")
    _settings.deterministic = mode
    if mode:
        _settings.kv_parallel = False
        AutotunerContext.enabled_for_forward = AutotunerContext.enabled_for_backward = False


def are_deterministic_algorithms_enabled() -> bool:
    """Whether natten's own deterministic mode is on (:func:`use_deterministic_algorithms`; PyTorch's
    mode is ``torch.are_deterministic_algorithms_enabled()``, which natten obeys as well)."""
    return _settings.deterministic


# NATTEN 0.17 spellings of the same switches
use_fna = use_fused_na
is_fna_enabled = is_fused_na_enabled


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
    NattenContext.reset()
    AutotunerContext.reset()
