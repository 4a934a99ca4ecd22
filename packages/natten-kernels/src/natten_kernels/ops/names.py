"""The ops of the ``natten`` namespace, by family (from natten_kernels.ops.spec)."""

from natten_kernels.ops.spec import SPECS

FUSED_OPS = tuple(n for n, s in SPECS.items() if s.family == "fused")
UNFUSED_OPS = tuple(n for n, s in SPECS.items() if s.family == "unfused")
OPS = FUSED_OPS + UNFUSED_OPS
