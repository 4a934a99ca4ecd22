"""Whether float32 inputs may use TF32 tensor-core math in natten's GPU kernels.

``None`` (the default) follows PyTorch's ``torch.backends.cuda.matmul.allow_tf32``; ``True`` /
``False`` override it for natten alone (``natten.use_tf32_in_gemm_na``, NATTEN 0.17's switch).
"""

from __future__ import annotations

import torch

_tf32: list[bool | None] = [None]


def set_tf32(mode: bool | None) -> None:
    _tf32[0] = mode


def tf32_enabled() -> bool:
    """The effective switch: natten's override, else PyTorch's matmul setting."""
    return torch.backends.cuda.matmul.allow_tf32 if _tf32[0] is None else _tf32[0]
