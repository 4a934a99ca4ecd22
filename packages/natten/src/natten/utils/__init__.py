"""Environment checks at the import path the seeds use (``natten.utils.get_device_cc``), and the
argument helpers NATTEN 0.17 code imports from here (``check_all_args``, ``get_num_na_weights``)."""

from __future__ import annotations

import math

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

from natten.functional.validation import normalize_params


def check_all_args(na_dim: int, kernel_size, dilation, is_causal=None):
    """NATTEN 0.17's helper: ``(kernel_size, dilation, is_causal)`` as tuples of ``na_dim`` entries
    (``is_causal=None`` means non-causal), validated as natten validates them."""
    params = normalize_params(na_dim, kernel_size, dilation, 1, False if is_causal is None else is_causal)
    return params.kernel_size, params.dilation, params.is_causal


def get_num_na_weights(kernel_size) -> int:
    """Keys per query: ``prod(kernel_size)``."""
    return math.prod(kernel_size) if isinstance(kernel_size, (tuple, list)) else int(kernel_size)


__all__ = [
    "check_all_args",
    "get_device_cc",
    "get_num_na_weights",
    "has_bfloat",
    "has_cuda",
    "has_fna",
    "has_fp32_gemm",
    "has_fp64_gemm",
    "has_gemm",
    "has_half",
    "has_tf32_gemm",
]
