"""Registered backends, in dispatch order."""

from natten_kernels.backends.base import FEATURES, Backend, Problem, TuningInfo
from natten_kernels.backends.cpu import CPU
from natten_kernels.backends.meta import META
from natten_kernels.backends.triton import TRITON
from natten_kernels.backends.triton_unfused import TRITON_UNFUSED_EXACT, TRITON_UNFUSED_GEMM

# CPU, CUDA and meta backends are disjoint; among the CUDA unfused ones the tensor-core variant comes first.
BACKENDS: list[Backend] = [CPU, TRITON, TRITON_UNFUSED_GEMM, TRITON_UNFUSED_EXACT, META]

__all__ = ["BACKENDS", "FEATURES", "Backend", "Problem", "TuningInfo"]
