"""Environment checks (``has_cuda``, ``has_fna``, ...): truthful answers from the registered backends.

Each ``has_*`` answers for one device: the CUDA device of the index given (the current one when
none is given), or the CPU when no index is given and torch sees no CUDA device. On the CPU,
``has_half``, ``has_bfloat`` and ``has_fna`` are true (the CPU backend runs the fused ops in every
float dtype, half types computed in float32) and the tensor-core checks false. With an index and no
CUDA every check is False. ``get_device_cc`` answers 0 without CUDA; none of them raises.
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


def _backends(device_index: int | None, *, kind: str | None = None, family: str | None = None) -> list[Backend]:
    """Usable backends of the device the checks are about: CUDA device ``device_index`` (the current
    one when None), or the CPU when no index is given and torch sees no CUDA device."""
    if device_index is None and not torch.cuda.is_available():
        device, cc = "cpu", 0
    elif not torch.cuda.is_available():
        return []
    else:
        device, cc = "cuda", get_device_cc(device_index)
    return [
        b
        for b in BACKENDS
        if device in b.devices
        and b.unavailable_reason() is None
        and cc >= b.min_compute_capability
        and (kind is None or kind in b.kinds)
        and (family is None or family in b.families)
    ]


def has_cuda() -> bool:
    """Whether natten has CUDA kernels that can run on this system."""
    return torch.cuda.is_available() and bool(_backends(None))


def _any_supports(backends: list[Backend], dtype: torch.dtype) -> bool:
    return any(dtype in b.dtypes for b in backends)


def has_half(device_index: int | None = None) -> bool:
    """Whether float16 runs on the device: CUDA device ``device_index`` (SM60+; the current one when
    None), or, without CUDA and without an index, the CPU (whose kernels convert float16 to float32
    and compute in float32: it saves memory, not time)."""
    return _any_supports(_backends(device_index), torch.float16) and (
        not _on_cuda(device_index) or get_device_cc(device_index) >= 60
    )


def has_bfloat(device_index: int | None = None) -> bool:
    """Whether bfloat16 runs on the device (CUDA: SM80+; the CPU as for :func:`has_half`)."""
    return _any_supports(_backends(device_index), torch.bfloat16) and (
        not _on_cuda(device_index) or get_device_cc(device_index) >= 80
    )


def _on_cuda(device_index: int | None) -> bool:
    return device_index is not None or torch.cuda.is_available()


def has_gemm(device_index: int | None = None) -> bool:
    """Whether tensor-core (GEMM) kernels run on the device (never on the CPU)."""
    return bool(_backends(device_index, kind="gemm"))


def has_fp32_gemm(device_index: int | None = None) -> bool:
    """Whether full-precision (float32 inputs, TF32 math) tensor-core kernels run on the device (SM80+)."""
    return get_device_cc(device_index) >= 80 and _any_supports(_backends(device_index, kind="gemm"), torch.float32)


has_tf32_gemm = has_fp32_gemm


def has_fp64_gemm(device_index: int | None = None) -> bool:
    """Whether float64 tensor-core kernels run on the device (SM80+)."""
    return get_device_cc(device_index) >= 80 and _any_supports(_backends(device_index, kind="gemm"), torch.float64)


def has_fna(device_index: int | None = None) -> bool:
    """Whether fused neighborhood attention kernels run on the device (the CPU as for :func:`has_half`)."""
    return bool(_backends(device_index, family="fused"))


has_fused_na = has_fna  # NATTEN 0.17's other name


def current_device(device_index: int | None = None) -> str:
    """What the checks above answer about: ``"cuda:<i>"`` or ``"cpu"``."""
    if device_index is not None:
        return f"cuda:{device_index}"
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
