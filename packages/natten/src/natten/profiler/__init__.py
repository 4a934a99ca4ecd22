"""natten's profiler: ``python -m natten.profiler [options]`` (``--help`` lists them).

Times natten's fused op (forward and backward), dense SDPA with the equivalent boolean mask and the
legacy module's attention on one problem, and reports medians, effective FLOP/s (useful FLOPs of
docs/flops.md) and the largest output difference against natten. The pieces are importable so the
benchmark suites (``benchmarks/``) reuse them::

    from natten.profiler import ProfileProblem, profile
    rows = profile(ProfileProblem.create((64, 64), 13), ["natten", "sdpa"])
"""

from natten.profiler.cli import main
from natten.profiler.implementations import IMPLEMENTATIONS, neighborhood_mask
from natten.profiler.problem import ProfileProblem
from natten.profiler.report import document, format_report, format_rows, table
from natten.profiler.runner import Row, environment, profile
from natten.profiler.timing import Samples, synchronize, time_forward_backward

__all__ = [
    "IMPLEMENTATIONS",
    "ProfileProblem",
    "Row",
    "Samples",
    "document",
    "environment",
    "format_report",
    "format_rows",
    "main",
    "neighborhood_mask",
    "profile",
    "synchronize",
    "table",
    "time_forward_backward",
]
