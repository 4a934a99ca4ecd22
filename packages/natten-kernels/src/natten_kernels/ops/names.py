"""The ops of the ``natten`` namespace; schemas live in ``csrc/ops.cpp`` (see docs/internals.md)."""

FUSED_OPS = ("na_fused_forward", "na_fused_backward")
UNFUSED_OPS = ("na_qk_forward", "na_qk_backward", "na_av_forward", "na_av_backward")
OPS = FUSED_OPS + UNFUSED_OPS
