"""Stand-in op registry for when the compiled C++ library is unavailable.

The ``natten::`` schemas normally come from ``libnatten_kernels.so`` (csrc/ops.cpp). Where that library
is missing (a GPU machine that cannot build it, a source checkout), importing natten_kernels calls
:func:`ensure_ops`, which defines the same schemas from Python (ops/spec.py, docs/internals.md) and
registers the backends' kernels, so the Triton and flex-cpu paths (dispatcher, op, autograd,
torch.compile) run unchanged. It does nothing when the library loaded.
"""

from __future__ import annotations

_installed = False


def ensure_ops() -> bool:
    """True when the stand-in registry was installed (the compiled library is missing)."""
    global _installed
    from natten_kernels import _library

    if _library.load() or _installed:
        return False
    from natten_kernels.backends import BACKENDS
    from natten_kernels.ops import register
    from natten_kernels.ops.spec import SPECS

    for name in SPECS:
        register.define(name)
    register.install(BACKENDS)
    _installed = True
    return True
