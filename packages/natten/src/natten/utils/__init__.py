"""Environment checks at the import path the seeds use (``natten.utils.get_device_cc``)."""

from natten_kernels.env import (
    get_device_cc,
    has_bfloat,
    has_cuda,
    has_fna,
    has_fp32_gemm,
    has_fp64_gemm,
    has_gemm,
    has_half,
    has_tf32_gemm,
)

__all__ = [
    "get_device_cc",
    "has_bfloat",
    "has_cuda",
    "has_fna",
    "has_fp32_gemm",
    "has_fp64_gemm",
    "has_gemm",
    "has_half",
    "has_tf32_gemm",
]
