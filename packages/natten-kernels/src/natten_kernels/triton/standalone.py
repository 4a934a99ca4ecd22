"""Stand-in op registry for GPU testing when the compiled C++ library is unavailable.

The ``natten::`` schemas normally come from ``libnatten_kernels.so`` (csrc/ops.cpp). On a GPU machine
where that library cannot be built, :func:`ensure_ops` defines the same schemas from Python (ops/spec.py,
docs/
internals.md), registers the fake implementations and the Triton CUDA kernels, so the Triton path
(dispatcher, op, autograd, torch.compile) runs unchanged. It does nothing when the library loaded.
"""

from __future__ import annotations

import torch

_lib = None


def ensure_ops() -> bool:
    """True when the stand-in registry was installed (the compiled library is missing)."""
    global _lib
    from natten_kernels import _library

    if _library.load() or _lib is not None:
        return False
    from natten_kernels.ops.spec import SPECS

    _lib = torch.library.Library("natten", "DEF")
    for name, spec in SPECS.items():
        _lib.define(name + spec.schema, tags=(torch.Tag.pt2_compliant_tag,))
    from natten_kernels.backends import triton as fused_cuda
    from natten_kernels.backends import triton_unfused as unfused_cuda
    from natten_kernels.ops import fake

    fake.register()
    fused_cuda.register_cuda_kernels()
    unfused_cuda.register_cuda_kernels()
    return True
