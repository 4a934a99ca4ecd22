"""The meta device: shapes, dtypes and devices only, no data.

Meta tensors run each op's fake implementation (``natten_kernels/ops/fake.py``, registered for the
Meta dispatch key by ``torch.library.register_fake``), so models on the meta device go through
natten's API like any other device: FLOP counting (``FlopCounterMode``), shape inference and deferred
initialization, forward and backward.
"""

from __future__ import annotations

from natten_kernels.backends.base import Backend
from natten_kernels.backends.cpu import LIBRARY_OPS

# the ops (and their fake implementations) come with the library
META = Backend(name="meta", devices=frozenset({"meta"}), **LIBRARY_OPS)
