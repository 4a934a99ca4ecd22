"""natten: neighborhood attention for PyTorch (1D/2D/3D, dilation, causal, stride, rpb)."""

from natten_kernels.env import (
    get_device_cc,
    has_bfloat,
    has_cuda,
    has_fna,
    has_fp32_gemm,
    has_fp64_gemm,
    has_fused_na,
    has_gemm,
    has_half,
    has_tf32_gemm,
)

from natten import functional
from natten.context import (
    MemoryUsagePreference,
    are_deterministic_algorithms_enabled,
    disable_autotuner,
    disable_fused_na,
    disable_gemm_na,
    disable_tf32,
    disable_tiled_na,
    enable_fused_na,
    enable_gemm_na,
    enable_tf32,
    enable_tiled_na,
    force_flex_attention,
    get_memory_usage_preference,
    is_autotuner_enabled,
    is_autotuner_enabled_for_backward,
    is_autotuner_enabled_for_forward,
    is_autotuner_thorough_for_backward,
    is_autotuner_thorough_for_forward,
    is_fna_enabled,
    is_fused_na_enabled,
    is_gemm_na_enabled,
    is_kv_parallelism_in_fused_na_enabled,
    is_memory_usage_default,
    is_memory_usage_strict,
    is_memory_usage_unrestricted,
    is_tf32_in_gemm_na_enabled,
    is_tiled_na_enabled,
    set_memory_usage_preference,
    use_autotuner,
    use_backend,
    use_deterministic_algorithms,
    use_flex_attention,
    use_fna,
    use_fused_na,
    use_gemm_na,
    use_kv_parallelism_in_fused_na,
    use_tf32_in_gemm_na,
    use_tiled_na,
)
from natten.modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__version__ = "1.0.0"

_LEGACY = (
    "LegacyNeighborhoodAttention",
    "LegacyNeighborhoodAttention1D",
    "LegacyNeighborhoodAttention2D",
    "LegacyNeighborhoodAttention3D",
)


def __getattr__(name: str):
    # The legacy Modules live in the optional natten-legacy package; resolve them on first use.
    if name in _LEGACY:
        try:
            import natten_legacy
        except ImportError as exc:
            raise ImportError(
                f"natten.{name} is provided by the natten-legacy package: pip install natten-legacy (or natten[legacy])"
            ) from exc
        return getattr(natten_legacy, name)
    raise AttributeError(f"module 'natten' has no attribute {name!r}")


__all__ = [
    "NeighborhoodAttention1D",
    "NeighborhoodAttention2D",
    "NeighborhoodAttention3D",
    *_LEGACY,
    "functional",
    "has_cuda",
    "has_half",
    "has_bfloat",
    "has_gemm",
    "has_fna",
    "has_fp32_gemm",
    "has_tf32_gemm",
    "has_fp64_gemm",
    "get_device_cc",
    "use_fused_na",
    "enable_fused_na",
    "disable_fused_na",
    "is_fused_na_enabled",
    "use_autotuner",
    "use_backend",
    "disable_autotuner",
    "is_autotuner_enabled",
    "is_autotuner_enabled_for_forward",
    "is_autotuner_enabled_for_backward",
    "use_kv_parallelism_in_fused_na",
    "is_kv_parallelism_in_fused_na_enabled",
    "set_memory_usage_preference",
    "get_memory_usage_preference",
    "is_memory_usage_default",
    "is_memory_usage_strict",
    "is_memory_usage_unrestricted",
    "enable_gemm_na",
    "disable_gemm_na",
    "is_gemm_na_enabled",
    "enable_tiled_na",
    "disable_tiled_na",
    "is_tiled_na_enabled",
    "__version__",
    # NATTEN 0.17 names (docs/api.md, "NATTEN 0.17 code")
    "MemoryUsagePreference",
    "are_deterministic_algorithms_enabled",
    "disable_tf32",
    "enable_tf32",
    "force_flex_attention",
    "has_fused_na",
    "is_autotuner_thorough_for_backward",
    "is_autotuner_thorough_for_forward",
    "is_fna_enabled",
    "is_tf32_in_gemm_na_enabled",
    "use_deterministic_algorithms",
    "use_flex_attention",
    "use_fna",
    "use_gemm_na",
    "use_tf32_in_gemm_na",
    "use_tiled_na",
]
