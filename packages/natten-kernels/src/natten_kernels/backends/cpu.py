"""The compiled C++ CPU backend (csrc/cpu)."""

from __future__ import annotations

import torch

from natten_kernels import _library
from natten_kernels.backends.base import FEATURES, Backend

CPU = Backend(
    name="cpu",
    families=frozenset({"fused", "unfused"}),
    devices=frozenset({"cpu"}),
    dtypes=frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64}),
    features=frozenset(FEATURES),
    unavailable_reason=_library.load_error,
)
