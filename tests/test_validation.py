"""Bad inputs give a ValueError/TypeError naming the argument, the expectation and what was received."""

import pytest
import torch

import natten
import natten.functional as F


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


Q2 = t(2, 8, 9, 2, 4)  # [B, H, W, heads, D] heads-last

# (call, expected exception, expected message) tables: one row per line, unwrapped (E501 is off here)
# fmt: off
FUSED_BAD = [
    ("kernel-1", lambda: F.na2d(Q2, Q2, Q2, 1), ValueError, r"kernel_size must be >= 2.*\(1, 1\)"),
    ("kernel-axis-count", lambda: F.na2d(Q2, Q2, Q2, (3, 3, 3)), ValueError, r"kernel_size must have one entry per spatial axis \(2\)"),
    ("kernel-float", lambda: F.na2d(Q2, Q2, Q2, 3.0), TypeError, r"kernel_size must be a int"),
    ("kernel-bool", lambda: F.na2d(Q2, Q2, Q2, True), TypeError, r"kernel_size"),
    ("kernel-too-big", lambda: F.na2d(Q2, Q2, Q2, 9), ValueError, r"on axis 0 kernel_size=9 \* dilation=1 = 9 > 8 in query of shape \(2, 8, 9, 2, 4\)"),
    ("kernel-dilation-too-big", lambda: F.na2d(Q2, Q2, Q2, 3, (1, 4)), ValueError, r"axis 1 kernel_size=3 \* dilation=4 = 12 > 9"),
    ("dilation-0", lambda: F.na2d(Q2, Q2, Q2, 3, 0), ValueError, r"dilation must be >= 1"),
    ("stride-0", lambda: F.na2d(Q2, Q2, Q2, 3, stride=0), ValueError, r"stride must satisfy 1 <= stride <= kernel_size.*stride=\(0, 0\)"),
    ("stride-gt-kernel", lambda: F.na2d(Q2, Q2, Q2, 3, stride=(1, 4)), ValueError, r"stride=\(1, 4\), kernel_size=\(3, 3\)"),
    ("causal-type", lambda: F.na2d(Q2, Q2, Q2, 3, is_causal=1), TypeError, r"is_causal must be a bool"),
    ("rpb-even", lambda: F.na2d(Q2, Q2, Q2, 4, rpb=t(2, 7, 7)), ValueError, r"rpb requires an odd kernel_size.*\(4, 4\)"),
    ("rpb-causal", lambda: F.na2d(Q2, Q2, Q2, 3, is_causal=(True, False), rpb=t(2, 5, 5)), ValueError, r"rpb is not supported with causal masking"),
    ("rpb-shape", lambda: F.na2d(Q2, Q2, Q2, 3, rpb=t(2, 5, 4)), ValueError, r"rpb must have shape \[heads, \*\(2 \* kernel_size - 1\)\] = \(2, 5, 5\); got \(2, 5, 4\)"),
    ("rank", lambda: F.na2d(t(2, 8, 2, 4), t(2, 8, 2, 4), t(2, 8, 2, 4), 3), ValueError, r"query must have 5 dims \[batch, height, width, heads, head_dim\]; got shape \(2, 8, 2, 4\)"),
    ("dtype-int", lambda: F.na1d(torch.ones(1, 8, 1, 4, dtype=torch.int64), t(1, 8, 1, 4), t(1, 8, 1, 4), 3), TypeError, r"query must be float16, bfloat16, float32 or float64; got torch.int64"),
    ("dtype-mismatch", lambda: F.na1d(t(1, 8, 1, 4), t(1, 8, 1, 4, dtype=torch.float64), t(1, 8, 1, 4), 3), TypeError, r"key must have the dtype of query \(torch.float32\); got torch.float64"),
    ("device-mismatch", lambda: F.na1d(t(1, 8, 1, 4), torch.randn(1, 8, 1, 4, device="meta"), t(1, 8, 1, 4), 3), ValueError, r"key must be on the device of query \(cpu\); got meta"),
    ("rpb-device", lambda: F.na1d(t(1, 8, 1, 4), t(1, 8, 1, 4), t(1, 8, 1, 4), 3, rpb=torch.randn(1, 5, device="meta")), ValueError, r"rpb must be on the device of query \(cpu\); got meta"),
    ("not-tensor", lambda: F.na1d([1.0], t(1, 8, 1, 4), t(1, 8, 1, 4), 3), TypeError, r"query must be a torch.Tensor; got list"),
    ("spatial-mismatch", lambda: F.na1d(t(1, 8, 2, 4), t(1, 9, 2, 4), t(1, 9, 2, 4), 3), ValueError, r"must share batch and spatial axes.*query \(1, 8, 2, 4\), key \(1, 9, 2, 4\)"),
    ("head-dim-mismatch", lambda: F.na1d(t(1, 8, 2, 4), t(1, 8, 2, 5), t(1, 8, 2, 4), 3), ValueError, r"key must have the head_dim of query \(4\)"),
    ("gqa-not-dividing", lambda: F.na1d(t(1, 8, 3, 4), t(1, 8, 2, 4), t(1, 8, 2, 4), 3), ValueError, r"key/value heads \(2\) must divide query heads \(3\)"),
    ("value-heads", lambda: F.na1d(t(1, 8, 2, 4), t(1, 8, 2, 4), t(1, 8, 1, 4), 3), ValueError, r"value must have the heads of key \(2\)"),
    ("addkv-alone", lambda: F.na1d(t(1, 8, 2, 4), t(1, 8, 2, 4), t(1, 8, 2, 4), 3, additional_keys=t(1, 3, 2, 4)), ValueError, r"additional_keys and additional_values must be given together"),
    ("addkv-shape", lambda: F.na1d( t(1, 8, 2, 4), t(1, 8, 2, 4), t(1, 8, 2, 4), 3, additional_keys=t(1, 3, 2, 5), additional_values=t(1, 3, 2, 4), ), ValueError, r"additional_keys must have shape .* = \(1, 3, 2, 4\); got \(1, 3, 2, 5\)"),
    ("scale-type", lambda: F.na1d(t(1, 8, 2, 4), t(1, 8, 2, 4), t(1, 8, 2, 4), 3, scale="x"), TypeError, r"scale must be a float or None"),
    # heads-first tensor given to a heads-last op: the size check hints at the layout
    ("layout-hint", lambda: F.na2d(t(1, 2, 16, 16, 4), t(1, 2, 16, 16, 4), t(1, 2, 16, 16, 4), 7), ValueError, r"expected layout \[batch, height, width, heads, head_dim\]; if a heads axis sits where a spatial axis belongs"),
]
# fmt: on

# fmt: off
UNFUSED_BAD = [
    ("qk-shape-mismatch", lambda: F.na1d_qk(t(1, 2, 8, 4), t(1, 2, 9, 4), 3), ValueError, r"query and key must have the same shape \[batch, heads, length, head_dim\]"),
    ("qk-kernel-too-big", lambda: F.na1d_qk(t(1, 2, 8, 4), t(1, 2, 8, 4), 9), ValueError, r"kernel_size=9 \* dilation=1 = 9 > 8"),
    ("qk-addk-shape", lambda: F.na1d_qk(t(1, 2, 8, 4), t(1, 2, 8, 4), 3, additional_keys=t(1, 3, 2, 4)), ValueError, r"additional_keys must have shape \[batch, heads, num_additional, head_dim\] with batch=1, heads=2, head_dim=4; got \(1, 3, 2, 4\)"),
    ("av-slots", lambda: F.na1d_av(t(1, 2, 8, 4), t(1, 2, 8, 4), 3), ValueError, r"attn must have prod\(kernel_size\) \+ num_additional = 3 \+ 0 = 3 entries in its last axis; got attn of shape \(1, 2, 8, 4\)"),
    ("av-shape", lambda: F.na1d_av(t(1, 2, 8, 3), t(1, 2, 9, 4), 3), ValueError, r"attn and value must share batch, heads and spatial axes"),
    ("av-dtype", lambda: F.na1d_av(t(1, 2, 8, 3, dtype=torch.float64), t(1, 2, 8, 4), 3), TypeError, r"attn must have the dtype of value"),
    ("qk-rpb-causal", lambda: F.na1d_qk(t(1, 2, 8, 4), t(1, 2, 8, 4), 3, is_causal=True, rpb=t(2, 5)), ValueError, r"rpb is not supported with causal masking"),
]
# fmt: on

# fmt: off
MODULE_BAD = [
    ("dim-heads", lambda: natten.NeighborhoodAttention2D(dim=10, num_heads=3, kernel_size=3), ValueError, r"dim \(10\) must be divisible by num_heads \(3\)"),
    ("module-kernel", lambda: natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=1), ValueError, r"kernel_size must be >= 2"),
    ("module-rpb-causal", lambda: natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3, is_causal=True, rel_pos_bias=True), ValueError, r"rel_pos_bias is not supported with causal"),
    ("module-rpb-even", lambda: natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=4, rel_pos_bias=True), ValueError, r"rel_pos_bias requires an odd kernel_size"),
    ("module-input", lambda: natten.NeighborhoodAttention2D(dim=8, num_heads=2, kernel_size=3)(t(1, 8, 8, 6)), ValueError, r"NeighborhoodAttention2D expects x of shape \[batch, height, width, dim=8\]; got \(1, 8, 8, 6\)"),
    ("module-3d-override", lambda: natten.NeighborhoodAttention3D(dim=8, num_heads=2, kernel_size=(3, 3, 3), kernel_size_d=5), ValueError, r"kernel_size_d can only be combined with an int kernel_size"),
    ("memory-pref", lambda: natten.set_memory_usage_preference("fast"), ValueError, r"pref must be one of 'default', 'strict', 'unrestricted'; got 'fast'"),
]
# fmt: on

ALL = FUSED_BAD + UNFUSED_BAD + MODULE_BAD


@pytest.mark.parametrize("fn,exc,pattern", [a[1:] for a in ALL], ids=[a[0] for a in ALL])
def test_bad_input_message(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_unsupported_device_lists_every_backend():
    """No tensor device without a backend exists in a CPU-only torch (meta has one): the API's problem
    for an XPU tensor goes to the dispatcher directly."""
    from natten_kernels.backends import Problem
    from natten_kernels.dispatcher import NoBackendError

    from natten.functional.dispatch import select_backend

    with pytest.raises(
        NoBackendError,
        match=r"natten has no backend for this problem \(fused 1d on xpu.*\n  - cpu: runs on cpu, not xpu"
        r"(.|\n)*  - meta: runs on meta, not xpu",
    ):
        select_backend(Problem("fused", "xpu", torch.float32, 1, 4, 4))
