"""natten-kernels: compiled kernels, the ``torch.ops.natten`` op registry, backends and dispatcher."""

from natten_kernels import _library  # raises ImportError under another torch than the build's
from natten_kernels.ops import fake as _fake

__version__ = "1.0.0"

if _library.load():
    _fake.register()
    from natten_kernels.ops import vmap as _vmap

    _vmap.register()  # per-sample vmap rules: torch.func.vmap / jacrev / jacfwd over the ops
    from natten_kernels.ops.flops import register_flop_formulas

    register_flop_formulas()  # FLOP formulas for torch.utils.flop_counter.FlopCounterMode
    from natten_kernels.backends import triton as _fused_cuda
    from natten_kernels.backends import triton_unfused as _unfused_cuda

    # Triton kernels for CUDA tensors (triton itself is imported on first use)
    _fused_cuda.register_cuda_kernels()
    _unfused_cuda.register_cuda_kernels()

from natten_kernels import dispatcher, env
from natten_kernels.backends import BACKENDS, Backend, Problem

__all__ = ["BACKENDS", "Backend", "Problem", "dispatcher", "env", "__version__"]
