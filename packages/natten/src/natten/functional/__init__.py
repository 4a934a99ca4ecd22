"""Functional neighborhood attention.

Fused (heads-last): ``na1d``, ``na2d``, ``na3d``.
Unfused (heads-first): ``na1d_qk``/``na1d_av``, ``na2d_qk``/``na2d_av``, ``na3d_qk``/``na3d_av``.
"""

from natten_kernels.env import (
    get_device_cc,
    has_fp32_gemm,
    has_fp64_gemm,
    has_gemm,
    has_tf32_gemm,
)

from natten.context import disable_gemm_na, disable_tiled_na, enable_gemm_na, enable_tiled_na
from natten.functional.fused import na1d, na2d, na3d
from natten.functional.unfused import na1d_av, na1d_qk, na2d_av, na2d_qk, na3d_av, na3d_qk

__all__ = [
    "na1d",
    "na2d",
    "na3d",
    "na1d_qk",
    "na1d_av",
    "na2d_qk",
    "na2d_av",
    "na3d_qk",
    "na3d_av",
    "get_device_cc",
    "has_gemm",
    "has_fp32_gemm",
    "has_tf32_gemm",
    "has_fp64_gemm",
    "enable_gemm_na",
    "disable_gemm_na",
    "enable_tiled_na",
    "disable_tiled_na",
]
