"""natten-kernels: compiled kernels, the ``torch.ops.natten`` op registry, backends and dispatcher."""

from natten_kernels import _library  # raises ImportError under another torch than the build's
from natten_kernels.backends import BACKENDS, Backend, Problem
from natten_kernels.ops import register as _register
from natten_kernels.ops.spec import SPECS as _SPECS

__version__ = "1.0.0"

if _library.load():
    # The library defines the ops (CPU kernels); fakes, FLOP formulas and vmap rules come from the spec.
    for _name in _SPECS:
        _register.annotate(_name)
    # Backends' own kernels (Triton on CUDA, ...), imported at their first call.
    _register.install(BACKENDS)
else:
    # Without the library the ops are defined from their specs, so that the backends that do not
    # need it (Triton, flex-cpu) still run; the cpu backend reports the library as missing.
    from natten_kernels.triton.standalone import ensure_ops as _ensure_ops

    _ensure_ops()

from natten_kernels import dispatcher, env

__all__ = ["BACKENDS", "Backend", "Problem", "dispatcher", "env", "__version__"]
