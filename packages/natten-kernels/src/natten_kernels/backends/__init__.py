"""Registered backends, in dispatch order."""

from natten_kernels.backends.base import FEATURES, Backend, Problem, TuningInfo
from natten_kernels.backends.cpu import CPU
from natten_kernels.backends.flex import FLEX, FLEX_CPU
from natten_kernels.backends.meta import META
from natten_kernels.backends.triton import TRITON
from natten_kernels.backends.triton_unfused import TRITON_UNFUSED_EXACT, TRITON_UNFUSED_GEMM

# CPU, CUDA and meta backends are disjoint; on each device natten's own kernels come first (FlexAttention
# runs what they cannot, when forced, or when the autotuner measures it faster); among the CUDA
# unfused ones the tensor-core variant comes first.
BACKENDS: list[Backend] = [CPU, FLEX_CPU, TRITON, FLEX, TRITON_UNFUSED_GEMM, TRITON_UNFUSED_EXACT, META]

__all__ = ["BACKENDS", "FEATURES", "Backend", "Problem", "TuningInfo"]
