"""Registered backends, in dispatch order."""

from natten_kernels.backends.base import FEATURES, Backend, Problem, TuningInfo
from natten_kernels.backends.cpu import CPU
from natten_kernels.backends.triton import TRITON

BACKENDS: list[Backend] = [CPU, TRITON]  # disjoint devices: the order only sets how refusals are listed

__all__ = ["BACKENDS", "FEATURES", "Backend", "Problem", "TuningInfo"]
