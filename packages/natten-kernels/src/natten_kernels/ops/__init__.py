"""The op registry: ``torch.ops.natten.*`` with fake implementations and FLOP formulas."""

from natten_kernels.ops.names import FUSED_OPS, OPS, UNFUSED_OPS

__all__ = ["FUSED_OPS", "OPS", "UNFUSED_OPS"]
