"""The meta device: shapes, dtypes and devices only, no data.

Meta tensors run each op's fake implementation (``natten_kernels/ops/fake.py``, registered for the
Meta dispatch key by ``torch.library.register_fake``), so models on the meta device go through
natten's API like any other device: FLOP counting (``FlopCounterMode``), shape inference and deferred
initialization, forward and backward.
"""

from __future__ import annotations

import torch

from natten_kernels import _library
from natten_kernels.backends.base import FEATURES, Backend

META = Backend(
    name="meta",
    families=frozenset({"fused", "unfused"}),
    devices=frozenset({"meta"}),
    dtypes=frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64}),
    features=frozenset(FEATURES),
    unavailable_reason=_library.load_error,  # the ops (and their fake implementations) come with the library
)
