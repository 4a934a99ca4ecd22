"""The FlexAttention backend on CUDA (compiled Flex: Triton, FLASH where FlashAttention-4 is installed)
against the float64 reference on upcast inputs: output, LSE and every gradient.

What the CPU suite (tests/test_flex.py) cannot see: the compiled kernels, the declared CUDA dtypes and
head dims (below 16 zero-padded), tiled BlockMasks with full and partial blocks, the bias gradient
of a captured tensor, GQA, determinism of the q/k/v gradients and the FLASH config. Each distinct
(rank, dtype, head dims, GQA, bias) compiles Flex once (seconds): the case list is kept short.
``pytest tests/gpu/test_flex_gpu.py`` runs it alone.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from natten_kernels.backends import flex
from natten_kernels.backends.base import TuningInfo

if flex.FLEX.unavailable_reason() is not None:
    pytest.skip(f"flex backend unusable here: {flex.FLEX.unavailable_reason()}", allow_module_level=True)

from cases import Case, fused_cases
from gpu.naref import check
from helpers import NAMES

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
DTYPES = tuple(sorted(flex.FLEX.dtypes, key=str))
CASES = fused_cases("cuda", dtypes=DTYPES)[::3]
TILED = [
    Case((32, 64), (13, 13), (1, 1), (1, 1), (False, False), rpb=True, heads=4, kv_heads=2, dtype=BF16),
    Case((16, 32, 32), (5, 9, 9), (1, 2, 1), (1, 1, 4), (True, False, False), additional=3, batch=1, dtype=F16),
    Case((64, 64), (32, 32), (1, 1), (16, 16), (False, False), batch=1, dtype=F32),  # full blocks
    Case((1024,), (300,), (1,), (1,), (True,), heads=4, kv_heads=1, batch=1, dtype=BF16),
]
HEAD_DIMS = [
    replace(TILED[0], head_dim=d, head_dim_v=dv, dtype=dt)
    for (d, dv), dt in zip(((4, 4), (20, 36), (64, 64), (128, 128), (256, 256)), itertools.cycle(DTYPES))
]


def run_flex(case: Case, t: dict, upstream, upstream_lse, config=()):
    """``(out, lse, grads)`` of flex.forward / flex.backward, the ops' calling convention."""
    opt = [t.get(n) for n in NAMES[3:]]
    params = (list(case.kernel_size), list(case.dilation), list(case.stride), list(case.is_causal))
    scale = case.head_dim**-0.5
    out, lse = flex.forward(t["q"], t["k"], t["v"], *opt, *params, scale, list(config))
    g = flex.backward(upstream, t["q"], t["k"], t["v"], out, lse, upstream_lse, *opt, *params, scale, list(config))
    return out, lse, {n: x for n, x in zip(NAMES, g) if n in t}


@pytest.mark.parametrize("case", CASES + TILED, ids=[c.id for c in CASES + TILED])
def test_matches_reference(case):
    check(case, "cuda", run_flex)


@pytest.mark.parametrize("case", HEAD_DIMS, ids=[f"hd{c.head_dim}-{c.head_dim_v}-{c.id}" for c in HEAD_DIMS])
def test_head_dims(case):
    assert case.head_dim <= flex.FLEX.max_head_dim
    check(case, "cuda", run_flex)


def test_qkv_gradients_are_deterministic():
    """The declaration leaves "deterministic_backward" out (the bias gradient is accumulated by
    atomics); q, k and v gradients are expected bitwise reproducible: if this holds and the bias
    gradient does too, the feature can be declared."""
    from gpu.naref import make_inputs

    case = TILED[0]
    t = make_inputs(case, "cuda", case.dtype)
    up = torch.randn(case.batch, *case.spatial, case.heads, case.head_dim_v, device="cuda", dtype=case.dtype)
    runs = [run_flex(case, t, up, None)[2] for _ in range(3)]
    for name in ("q", "k", "v"):
        assert all(torch.equal(runs[0][name], r[name]) for r in runs[1:]), name


@pytest.mark.skipif(not flex.flash_available(), reason="FlashAttention-4 (flash_attn.cute) is not installed")
@pytest.mark.parametrize("case", [replace(c, head_dim=128, head_dim_v=128) for c in TILED[:2]], ids=["2d", "3d"])
def test_flash_config(case):
    """config [1]: Flex's FLASH kernels (forward; backward where there is no bias or LSE gradient)."""
    assert [flex.FLASH] in flex.forward_configs(TuningInfo(1, case.heads, case.kv_heads, 1, case.head_dim))
    check(case, "cuda", run_flex, config=[flex.FLASH])
