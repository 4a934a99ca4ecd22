"""The Triton fused backend (natten_kernels/triton): CUDA GPUs of compute capability 8.0 and newer."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from natten_kernels.backends.base import TENSOR_CORE_DTYPES, Backend, TuningInfo
from natten_kernels.triton import tiling  # pure Python: importing it needs no triton

# What the kernels really implement (forward-mode AD is not: the fused backward has no derivative).
TRITON_FEATURES = frozenset(
    {"causal", "dilation", "stride", "rpb", "additional_kv", "gqa", "backward", "deterministic_backward", "query_box"}
)
MIN_CC = 80  # bf16 / tf32 tensor-core dots (tl.dot) as used by the kernels


_reason: list[str | None] = []  # computed once (a plain function: torch.compile traces the dispatcher)


def unavailable_reason() -> str | None:
    """None when the kernels can run in this process, else why not."""
    if not _reason:
        _reason.append(_check())
    return _reason[0]


def _check() -> str | None:
    # the real cause first: without a CUDA device, installing triton would not help
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    major, minor = torch.cuda.get_device_capability()
    if 10 * major + minor < MIN_CC:
        return f"needs compute capability >= {MIN_CC // 10}.{MIN_CC % 10}, device 0 is {major}.{minor}"
    return None


# What the backends of Triton tensor-core kernels share (triton, flex, triton-unfused-gemm): CUDA devices
# of MIN_CC and newer, tl.dot's dtypes, and the "gemm" kind that disable_gemm_na() switches off.
TENSOR_CORE_CUDA: dict[str, Any] = dict(
    devices=frozenset({"cuda"}),
    dtypes=TENSOR_CORE_DTYPES,
    kinds=frozenset({"gemm"}),
    min_compute_capability=MIN_CC,
)


def forward_configs(info: TuningInfo) -> list[list[int]]:
    """``[block_q, block_k, num_warps, num_stages, variant]``; ``[]`` = the per-problem default (tile
    efficiency x measured rate, chosen by the launcher, which sees the window); the autotuner also
    times every measured configuration of the head dim (variant 1 = TMA loads)."""
    return [[], *tiling.candidates(info.head_dim)]


def backward_configs(info: TuningInfo) -> list[list[int]]:
    """``[resident block, streamed block, num_warps, num_stages, variant]``, deterministic by default;
    with KV parallelism (unless memory is "strict": it adds a float32 dq buffer) every candidate is
    the KV-parallel variant 1 (dq by atomics in the dk/dv pass)."""
    if not (info.kv_parallel and info.memory_preference != "strict"):
        return [[], *tiling.candidates(info.head_dim, backward=True)]
    return [[0, 0, 0, 0, 1], *tiling.candidates(info.head_dim, backward=True, kv_parallel=True)]


TRITON = Backend(
    name="triton",
    families=frozenset({"fused"}),
    features=TRITON_FEATURES,
    max_head_dim=256,
    head_dim_multiple=8,
    unavailable_reason=unavailable_reason,
    forward_configs=forward_configs,
    backward_configs=backward_configs,
    kernels={
        "na_fused_forward": "natten_kernels.triton.launch_forward:na_fused_forward",
        "na_fused_backward": "natten_kernels.triton.launch_backward:na_fused_backward",
    },
    **TENSOR_CORE_CUDA,
)
