"""Environment checks (``has_cuda``, ``has_fna``, ...): truthful answers from the registered backends.

Without CUDA every ``has_*`` answers False and ``get_device_cc`` answers 0; none of them raises.
"""

from __future__ import annotations

import torch

from natten_kernels.backends import BACKENDS, Backend


def get_device_cc(device_index: int | None = None) -> int:
    """Compute capability of a CUDA device as ``10 * major + minor`` (90 for H100/H200); 0 without CUDA."""
    if not torch.cuda.is_available():
        return 0
    major, minor = torch.cuda.get_device_capability(device_index)
    return 10 * major + minor


def _cuda_backends(device_index: int | None, *, kind: str | None = None, family: str | None = None) -> list[Backend]:
    if not torch.cuda.is_available():
        return []
    cc = get_device_cc(device_index)
    return [
        b
        for b in BACKENDS
        if "cuda" in b.devices
        and b.unavailable_reason() is None
        and cc >= b.min_compute_capability
        and (kind is None or kind in b.kinds)
        and (family is None or family in b.families)
    ]


def has_cuda() -> bool:
    """Whether natten has CUDA kernels that can run on this system."""
    return bool(_cuda_backends(None))


def _any_supports(backends: list[Backend], dtype: torch.dtype) -> bool:
    return any(dtype in b.dtypes for b in backends)


def has_half(device_index: int | None = None) -> bool:
    """Whether float16 runs on the CUDA device (SM60+)."""
    return get_device_cc(device_index) >= 60 and _any_supports(_cuda_backends(device_index), torch.float16)


def has_bfloat(device_index: int | None = None) -> bool:
    """Whether bfloat16 runs on the CUDA device (SM80+)."""
    return get_device_cc(device_index) >= 80 and _any_supports(_cuda_backends(device_index), torch.bfloat16)


def has_gemm(device_index: int | None = None) -> bool:
    """Whether tensor-core (GEMM) kernels run on the CUDA device."""
    return bool(_cuda_backends(device_index, kind="gemm"))


def has_fp32_gemm(device_index: int | None = None) -> bool:
    """Whether full-precision (float32 inputs, TF32 math) tensor-core kernels run on the CUDA device."""
    return get_device_cc(device_index) >= 80 and _any_supports(_cuda_backends(device_index, kind="gemm"), torch.float32)


has_tf32_gemm = has_fp32_gemm


def has_fp64_gemm(device_index: int | None = None) -> bool:
    """Whether float64 tensor-core kernels run on the CUDA device (SM80+)."""
    return get_device_cc(device_index) >= 80 and _any_supports(_cuda_backends(device_index, kind="gemm"), torch.float64)


def has_fna(device_index: int | None = None) -> bool:
    """Whether fused neighborhood attention kernels run on the CUDA device."""
    return bool(_cuda_backends(device_index, family="fused"))
