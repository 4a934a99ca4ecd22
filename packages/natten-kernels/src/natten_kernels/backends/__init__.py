"""Registered backends, in dispatch order."""

from natten_kernels.backends.base import FEATURES, Backend, Problem
from natten_kernels.backends.cpu import CPU

BACKENDS: list[Backend] = [CPU]

__all__ = ["BACKENDS", "FEATURES", "Backend", "Problem"]
