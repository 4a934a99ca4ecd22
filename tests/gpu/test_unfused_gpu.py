"""The GPU suite for the unfused ops: the Triton unfused kernels on CUDA against the float64 reference.

Both variants (tensor-core "gemm" and CUDA-core "exact", picked through the dispatcher switches), every
dtype each supports, the shared CPU checks (values, gradients, gradcheck / gradgradcheck in float64,
forward-mode AD, nested tensors, poisoned outputs), exactness of the exact variant, a case whose
attention tensor exceeds 2^31 elements, determinism, and the Modules' unfused path with dropout.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from natten_kernels.backends.triton_unfused import TRITON_UNFUSED_GEMM

if TRITON_UNFUSED_GEMM.unavailable_reason() is not None:
    pytest.skip(
        f"triton unfused backends unusable: {TRITON_UNFUSED_GEMM.unavailable_reason()}", allow_module_level=True
    )

from natten_legacy.reference import na_av_reference, na_qk_reference
from natten_legacy.testing import assert_close_to_reference

import natten
import natten.functional as F
from cases import Case, unfused_cases
from unfused_checks import (
    check_forward_mode_ad,
    check_gradcheck_and_gradgradcheck,
    check_matches_reference,
    check_nested_tensor_forward,
    check_ops,
    check_outputs_fully_written,
)

EXACT, GEMM = 0, 1
F32 = torch.float32
ALL = (torch.float64, F32, torch.float16, torch.bfloat16)
CASES = unfused_cases("cuda", dtypes=ALL)
assert CASES, "no unfused case generated for cuda"
# head dims and sizes where tiles are partial at every border; small and large kernels (gather / scatter)
EXTRA = [
    Case((67,), (13,), (1,), (1,), (False,), rpb=True, head_dim=64, head_dim_v=64, dtype=torch.float16),
    Case((37, 29), (7, 9), (2, 1), (1, 3), (False, True), head_dim=32, head_dim_v=32, dtype=torch.bfloat16),
    Case((33, 35), (15, 13), rpb=True, head_dim=128, head_dim_v=128, dtype=torch.float16),
    Case((9, 13, 18), (3, 5, 7), (1, 2, 1), (2, 1, 1), (True, False, False), head_dim=24, head_dim_v=24, dtype=F32),
    Case((30, 31), (7, 7), (1, 1), (1, 1), (False, False), head_dim=256, head_dim_v=256, dtype=torch.float16),
]


def _variants(case):
    return [EXACT] if case.dtype == torch.float64 else [GEMM, EXACT]


OP_RUNS = [(c, v) for c in CASES + EXTRA for v in _variants(c)]


@pytest.mark.parametrize("case, variant", OP_RUNS, ids=[f"{c.id}-{'gemm' if v else 'exact'}" for c, v in OP_RUNS])
def test_ops_match_reference(case, variant):
    check_ops(case, torch.ops.natten, [variant], device="cuda")


# every path of the gemm variant, forced (the default picks one per problem): halo per pair, halo rows,
# direct, band; 1D rpb fp16, 2D dilated causal bf16, 3D causal strided fp32 (TF32)
PATHS = {"halo-pairs": [64, 64, 64, 4, 0], "halo-rows": [64, 64, 64, 4, 1], "direct": [32, 16, 32, 4, 2]}
PATHS["band"] = [16, 32, 4, 2, 3]
PATH_CASES = [EXTRA[0], EXTRA[1], EXTRA[3]]


@pytest.mark.parametrize("path", list(PATHS.values()), ids=list(PATHS))
@pytest.mark.parametrize("case", PATH_CASES, ids=[c.id for c in PATH_CASES])
def test_every_gemm_path_matches_reference(case, path):
    check_ops(case, torch.ops.natten, [GEMM, *path], device="cuda")


@pytest.mark.parametrize("gemm", [True, False], ids=["gemm", "exact"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pipeline_matches_reference(case, gemm):
    if not gemm:
        F.disable_gemm_na()
    check_matches_reference(case, device="cuda")


GRAD_CASES = [c for c in CASES if c.dtype == torch.float64][:5]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradcheck_and_gradgradcheck(case):
    check_gradcheck_and_gradgradcheck(case, device="cuda")


@pytest.mark.parametrize("case", GRAD_CASES[:3], ids=[c.id for c in GRAD_CASES[:3]])
def test_forward_mode_ad(case):
    check_forward_mode_ad(case, device="cuda")


def test_nested_tensor_forward():
    check_nested_tensor_forward(device="cuda")


@pytest.mark.parametrize("gemm", [True, False], ids=["gemm", "exact"])
def test_outputs_fully_written(poisoned, gemm):
    if not gemm:
        F.disable_gemm_na()
    check_outputs_fully_written(replace(EXTRA[1], dtype=torch.float16), device="cuda")


def test_dispatcher_switches_and_env():
    from natten_kernels.backends import Problem
    from natten_kernels.dispatcher import select

    from natten import context

    p = Problem("unfused", "cuda", torch.float16, 2, 32, 32, frozenset({"backward"}))
    assert select(p, context.disabled_backend_kinds()).name == "triton-unfused-gemm"
    F.disable_gemm_na()
    assert select(p, context.disabled_backend_kinds()).name == "triton-unfused-exact"
    F.disable_tiled_na()  # no tiled / non-tiled pair on CUDA: still the exact kernels
    assert select(p, context.disabled_backend_kinds()).name == "triton-unfused-exact"
    p64 = replace(p, dtype=torch.float64)
    F.enable_gemm_na()
    assert select(p64, context.disabled_backend_kinds()).name == "triton-unfused-exact"
    assert natten.has_gemm() and natten.has_tf32_gemm() and not natten.has_fp64_gemm()


def test_exact_variant_is_exact_fp32():
    """1 + 2^-20 survives float32 but not TF32 (10 mantissa bits): the exact kernels never round to TF32,
    even where torch allows TF32 matmuls."""
    q = torch.zeros(1, 1, 16, 16, device="cuda")
    q[..., 0] = 1 + 2**-20
    k = torch.zeros_like(q)
    k[..., 0] = 1.0
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        F.disable_gemm_na()
        attn = F.na1d_qk(q, k, 3)
        out = F.na1d_av(attn, k, 3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    assert (attn == 1 + 2**-20).all()
    assert (out[..., 0] == 3 * (1 + 2**-20)).all()


def test_int64_indexing_attention_over_2_31_elements():
    """[1, 1, 2^21, 1025] attention weights: 2.1e9 elements; the last queries checked against the reference
    on the trailing tokens (their windows only see those)."""
    n, k, d, m = 2**21, 1025, 8, 64
    q = torch.randn(1, 1, n, d, device="cuda", dtype=torch.float16)
    kk = torch.randn_like(q)
    attn = F.na1d_qk(q, kk, k)
    assert attn.numel() > 2**31
    tail = slice(n - m - 2 * k, n)
    ref = na_qk_reference(q[:, :, tail].double(), kk[:, :, tail].double(), k)
    assert_close_to_reference(attn[:, :, n - m :], ref[:, :, -m:], name="attn tail")
    w = attn[:, :, n - m - 2 * k :].softmax(-1)
    out = F.na1d_av(attn.softmax(-1), kk, k)
    ref_out = na_av_reference(w.double(), kk[:, :, tail].double(), k)
    assert_close_to_reference(out[:, :, n - m :], ref_out[:, :, -m:], name="out tail")


def test_deterministic_bitwise():
    case = replace(EXTRA[2], batch=2)
    torch.use_deterministic_algorithms(True)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        q, k, v = (
            torch.randn(2, 2, 33, 35, 128, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3)
        )
        rpb = torch.randn(2, 29, 25, device="cuda", dtype=torch.float16, requires_grad=True)
        attn = F.na2d_qk(q, k, case.kernel_size, rpb=rpb)
        out = F.na2d_av(attn.softmax(-1), v, case.kernel_size)
        out.backward(torch.ones_like(out))
        runs.append([out, q.grad, k.grad, v.grad, rpb.grad])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_module_unfused_path_with_dropout(dtype):
    natten.use_fused_na(False)
    torch.manual_seed(0)
    m = natten.NeighborhoodAttention2D(dim=64, num_heads=4, kernel_size=7, dilation=2, attn_drop=0.1).cuda().to(dtype)
    x = torch.randn(2, 20, 23, 64, device="cuda", dtype=dtype, requires_grad=True)
    m.train()
    y = m(x)
    y.float().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    m.eval()
    ref = natten.LegacyNeighborhoodAttention2D(dim=64, num_heads=4, kernel_size=7, dilation=2).cuda().double()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert_close_to_reference(m(x), ref(x.double()), name="module eval")
