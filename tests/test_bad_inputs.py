"""User-reported bad inputs: zero-size axes, non-finite or non-numeric scales, non-bool flags and nested
tensors give a clear TypeError/ValueError (or, for a zero batch, an empty result), never a crash or a
silently wrong result; ``qk_scale=0.0`` is honoured."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from natten_legacy.reference import na_reference

import natten
import natten.functional as F


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# ---- zero-size axes ---------------------------------------------------------------------------------

LAYOUT_1D = r"\[batch, length, heads, head_dim\]"
ZERO_SIZE = [
    # the report: zero query heads with one kv head reached an integer division by zero (SIGFPE)
    ("fused-query-heads", lambda: F.na1d(t(1, 16, 0, 8), t(1, 16, 1, 8), t(1, 16, 1, 8), 3), "query", "heads"),
    ("fused-kv-heads", lambda: F.na1d(t(1, 16, 2, 8), t(1, 16, 0, 8), t(1, 16, 0, 8), 3), "key", "kv_heads"),
    ("fused-head-dim", lambda: F.na1d(t(1, 16, 2, 0), t(1, 16, 2, 0), t(1, 16, 2, 8), 3), "query", "head_dim"),
    ("fused-head-dim-v", lambda: F.na1d(t(1, 16, 2, 8), t(1, 16, 2, 8), t(1, 16, 2, 0), 3), "value", "head_dim_v"),
    ("fused-length", lambda: F.na1d(t(1, 0, 2, 8), t(1, 0, 2, 8), t(1, 0, 2, 8), 3), "query", "length"),
    ("fused-2d-width", lambda: F.na2d(t(1, 5, 0, 2, 8), t(1, 5, 0, 2, 8), t(1, 5, 0, 2, 8), 3), "query", "width"),
    ("fused-3d-depth", lambda: F.na3d(*(t(1, 0, 4, 4, 2, 8) for _ in range(3)), 3), "query", "depth"),
    ("qk-heads", lambda: F.na1d_qk(t(1, 0, 16, 8), t(1, 0, 16, 8), 3), "query", "heads"),
    ("qk-head-dim", lambda: F.na2d_qk(t(1, 2, 5, 5, 0), t(1, 2, 5, 5, 0), 3), "query", "head_dim"),
    ("qk-length", lambda: F.na1d_qk(t(1, 2, 0, 8), t(1, 2, 0, 8), 3), "query", "length"),
    ("av-heads", lambda: F.na1d_av(t(1, 0, 16, 3), t(1, 0, 16, 8), 3), "value", "heads"),
    ("av-head-dim", lambda: F.na3d_av(t(1, 2, 3, 3, 3, 8), t(1, 2, 3, 3, 3, 0), 2), "value", "head_dim"),
]


@pytest.mark.parametrize("fn,name,axis", [z[1:] for z in ZERO_SIZE], ids=[z[0] for z in ZERO_SIZE])
def test_zero_size_axis_is_a_clear_value_error(fn, name, axis):
    with pytest.raises(ValueError, match=rf"{name} has a zero-size {axis} axis; expected \[batch, .*got shape \("):
        fn()


def test_zero_size_message_names_layout_and_shape():
    with pytest.raises(ValueError, match=rf"query has a zero-size heads axis; expected {LAYOUT_1D}.*\(1, 16, 0, 8\)"):
        F.na1d(torch.randn(1, 16, 0, 8), t(1, 16, 1, 8), t(1, 16, 1, 8), 3)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_zero_batch_gives_empty_results_forward_and_backward(rank):
    s = (6,) * rank
    q, k, v = (torch.randn(0, *s, 2, 4, requires_grad=True) for _ in range(3))
    na = {1: F.na1d, 2: F.na2d, 3: F.na3d}[rank]
    out, lse = na(q, k, v, 3, return_lse=True)
    assert out.shape == (0, *s, 2, 4) and lse.shape == (0, *s, 2)
    (out.sum() + lse.sum()).backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    qh, kh, vh = (x.detach().movedim(-2, 1).requires_grad_() for x in (q, k, v))
    qk = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}[rank]
    av = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}[rank]
    o = av(qk(qh, kh, 3).softmax(-1), vh, 3)
    assert o.shape == vh.shape
    o.sum().backward()
    assert qh.grad.shape == qh.shape
    module = natten.NeighborhoodAttention2D(dim=8, num_heads=2, kernel_size=3)
    assert module(torch.randn(0, 5, 5, 8)).shape == (0, 5, 5, 8)


ZERO_OPS = {
    "heads0": "q = torch.randn(1, 16, 0, 8); k = v = torch.randn(1, 16, 1, 8)",
    "dim0": "q = k = torch.randn(1, 16, 2, 0); v = torch.randn(1, 16, 1, 8); k = torch.randn(1, 16, 1, 0)",
    "dimv0": "q = k = torch.randn(1, 16, 2, 8); v = torch.randn(1, 16, 1, 0); k = torch.randn(1, 16, 1, 8)",
    "batch0": "q = torch.randn(0, 16, 2, 8); k = v = torch.randn(0, 16, 1, 8)",
}


@pytest.mark.parametrize("setup", list(ZERO_OPS.values()), ids=list(ZERO_OPS))
def test_kernels_survive_zero_size_axes(setup):
    """The C++ kernels called directly (no Python validation) never divide by zero: they run in a
    child process, which must exit normally with empty (or well-defined) results."""
    code = textwrap.dedent(
        f"""
        import torch, natten
        ops = torch.ops.natten
        P = ([3], [1], [1], [False])
        {setup}
        out, lse = ops.na_fused_forward(q, k, v, None, None, None, *P, 1.0)
        assert out.shape == (*q.shape[:-1], v.shape[-1]) and lse.shape == q.shape[:-1]
        dq, dk, dv, *_ = ops.na_fused_backward(torch.ones_like(out), q, k, v, out, lse, None, None, None, None, *P, 1.0)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
        assert bool(torch.isfinite(dk).all()) and bool(torch.isfinite(dv).all())
        qh, kh, vh = (x.movedim(-2, 1) for x in (q, k, v))
        a = ops.na_qk_forward(qh, qh, None, *P)
        ops.na_qk_backward(torch.ones_like(a), qh, qh, None, *P)
        o = ops.na_av_forward(a.softmax(-1), qh, *P)
        ops.na_av_backward(torch.ones_like(o), a, qh, *P)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


# ---- scale ------------------------------------------------------------------------------------------

Q = t(1, 9, 2, 4)
BAD_SCALES = [
    ("nan", float("nan"), ValueError, r"scale must be a finite float; got nan"),
    ("inf", float("inf"), ValueError, r"scale must be a finite float; got inf"),
    ("-inf", float("-inf"), ValueError, r"scale must be a finite float; got -inf"),
    ("huge-int", 10**400, ValueError, r"scale must be a finite float; got 1000.*beyond the float range"),
    ("float32-overflow", 1e300, ValueError, r"scale must be representable in float32.*float32 inputs"),
    ("bool", True, TypeError, r"scale must be a float or None; got True of type bool"),
    ("string", "0.5", TypeError, r"scale must be a float or None; got '0.5' of type str"),
    ("tensor", torch.tensor(0.5), TypeError, r"scale must be a float or None"),
    ("complex", 1j, TypeError, r"scale must be a float or None"),
]


@pytest.mark.parametrize("scale,exc,pattern", [b[1:] for b in BAD_SCALES], ids=[b[0] for b in BAD_SCALES])
def test_bad_scale(scale, exc, pattern):
    with pytest.raises(exc, match=pattern):
        F.na1d(Q, Q, Q, 3, scale=scale)


def test_head_dim_zero_is_a_value_error_not_zero_division():
    q = t(1, 9, 2, 0)
    with pytest.raises(ValueError, match="zero-size head_dim axis"):
        F.na1d(q, q, t(1, 9, 2, 4), 3)


@pytest.mark.parametrize("scale", [0, 0.0, -0.5, 2, np.float32(0.25), 1e300])
def test_any_finite_scale_is_honoured(scale):
    """Zero and negative scales are mathematically fine and allowed; float64 takes float64's range."""
    q, k, v = (torch.randn(1, 9, 2, 4, dtype=torch.float64) for _ in range(3))
    if isinstance(scale, float) and scale == 1e300:
        q = q * 1e-300
    torch.testing.assert_close(F.na1d(q, k, v, 3, scale=scale), na_reference(q, k, v, 3, scale=float(scale)))


@pytest.mark.parametrize("qk_scale,exc,pattern", [b[1:] for b in BAD_SCALES], ids=[b[0] for b in BAD_SCALES])
def test_bad_module_qk_scale(qk_scale, exc, pattern):
    pattern = pattern.replace("scale", "qk_scale", 1)
    if qk_scale == 1e300:  # finite as a double: refused when the module runs in float32
        module = natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3, qk_scale=qk_scale)
        with pytest.raises(exc, match=pattern):
            module(torch.randn(1, 9, 8))
        return
    with pytest.raises(exc, match=pattern):
        natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3, qk_scale=qk_scale)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_module_qk_scale_zero_is_honoured(rank, fused):
    """qk_scale=0.0 is uniform attention over the window, not the default scale."""
    cls = {1: natten.NeighborhoodAttention1D, 2: natten.NeighborhoodAttention2D, 3: natten.NeighborhoodAttention3D}
    module = cls[rank](dim=8, num_heads=2, kernel_size=3, qk_scale=0.0).double()
    assert module.scale == 0.0
    x = torch.randn(1, *(5,) * rank, 8, dtype=torch.float64)
    natten.use_fused_na(fused)
    out = module(x)
    q, k, v = module.qkv(x).reshape(1, *(5,) * rank, 3, 2, 4).unbind(-3)
    expected = module.proj(na_reference(q, k, v, 3, scale=0.0).reshape(1, *(5,) * rank, 8))
    torch.testing.assert_close(out, expected)
    default = cls[rank](dim=8, num_heads=2, kernel_size=3)
    default.load_state_dict(module.state_dict())
    assert not torch.allclose(default(x.float()).double(), out, atol=1e-4)


# ---- boolean flags and arguments --------------------------------------------------------------------

BAD_BOOLS = [
    ("use_fused_na-str", lambda: natten.use_fused_na("no"), r"use_fused_na: mode must be a bool.*'no'"),
    ("use_fused_na-int", lambda: natten.use_fused_na(0), r"use_fused_na: mode must be a bool.*got 0 of type int"),
    ("use_fused_na-kv", lambda: natten.use_fused_na(True, kv_parallel="yes"), r"use_fused_na: kv_parallel"),
    ("kv-parallel", lambda: natten.use_kv_parallelism_in_fused_na(1), r"use_kv_parallelism_in_fused_na: mode"),
    ("autotuner-fwd", lambda: natten.use_autotuner("yes"), r"use_autotuner: forward_pass must be a bool"),
    ("autotuner-bwd", lambda: natten.use_autotuner(False, 1), r"use_autotuner: backward_pass must be a bool"),
    ("return_lse", lambda: F.na1d(Q, Q, Q, 3, return_lse="yes"), r"return_lse must be a bool.*'yes'"),
    ("return_lse-int", lambda: F.na1d(Q, Q, Q, 3, return_lse=1), r"return_lse must be a bool"),
    ("is_causal-int", lambda: F.na1d(Q, Q, Q, 3, is_causal=1), r"is_causal must be a bool"),
    ("is_causal-ints", lambda: F.na2d(*[t(1, 5, 5, 2, 4)] * 3, 3, is_causal=(1, 0)), "is_causal entries must be bool"),
    ("is_causal-str", lambda: F.na1d_qk(t(1, 2, 9, 4), t(1, 2, 9, 4), 3, is_causal="True"), "is_causal"),
    ("av-is_causal", lambda: F.na1d_av(t(1, 2, 9, 3), t(1, 2, 9, 4), 3, is_causal=None), "is_causal"),
    ("module-causal", lambda: natten.NeighborhoodAttention1D(8, 2, 3, is_causal=(1,)), "is_causal"),
    ("module-rpb", lambda: natten.NeighborhoodAttention1D(8, 2, 3, rel_pos_bias="yes"), r"rel_pos_bias must be a bool"),
    ("module-qkv-bias", lambda: natten.NeighborhoodAttention1D(8, 2, 3, qkv_bias=1), r"qkv_bias must be a bool"),
]


@pytest.mark.parametrize("fn,pattern", [b[1:] for b in BAD_BOOLS], ids=[b[0] for b in BAD_BOOLS])
def test_non_bool_flags_are_type_errors(fn, pattern):
    with pytest.raises(TypeError, match=pattern):
        fn()
    assert natten.is_fused_na_enabled() and not natten.is_autotuner_enabled()  # nothing changed


def test_numpy_bools_work():
    natten.use_fused_na(np.bool_(False))
    assert natten.is_fused_na_enabled() is False
    natten.use_kv_parallelism_in_fused_na(np.bool_(False))
    q, k, v = (torch.randn(1, 6, 7, 2, 4, dtype=torch.float64) for _ in range(3))
    out, _lse = F.na2d(q, k, v, 3, is_causal=(np.bool_(True), np.bool_(False)), return_lse=np.bool_(True))
    torch.testing.assert_close(out, na_reference(q, k, v, 3, is_causal=(True, False)))
    module = natten.NeighborhoodAttention1D(8, 2, 3, is_causal=np.bool_(True), qkv_bias=np.bool_(False))
    assert module.is_causal == (True,) and type(module.is_causal[0]) is bool and module.qkv.bias is None


# ---- nested tensors ---------------------------------------------------------------------------------


def _nested(*lengths, heads=2, dim=4):
    return torch.nested.nested_tensor([torch.randn(n, heads, dim) for n in lengths], layout=torch.jagged)


@pytest.mark.parametrize("which", ["query", "key", "value"])
def test_nested_tensor_to_fused_op(which):
    args = {n: torch.randn(2, 9, 2, 4) for n in ("query", "key", "value")}
    args[which] = _nested(9, 11)
    with pytest.raises(TypeError, match=rf"{which} is a nested tensor; the fused ops .* do not support nested tensors"):
        F.na1d(**args, kernel_size=3)


def test_nested_tensor_to_module():
    x = torch.nested.nested_tensor([torch.randn(9, 8), torch.randn(11, 8)], layout=torch.jagged)
    with pytest.raises(TypeError, match="x is a nested tensor; NeighborhoodAttention1D does not support nested"):
        natten.NeighborhoodAttention1D(8, 2, 3)(x)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("shape", [(1, 0, 5, 8), (1, 5, 0, 8), (0, 5, 5, 8)], ids=["height0", "width0", "batch0"])
def test_module_zero_size_input_gives_empty_output(shape, fused):
    """The Modules pad axes shorter than the window, so a zero-size spatial axis (or batch) is an empty
    output, fused or unfused; a zero channel axis is a ValueError (x must have dim channels)."""
    natten.use_fused_na(fused)
    module = natten.NeighborhoodAttention2D(dim=8, num_heads=2, kernel_size=3)
    assert module(torch.randn(*shape)).shape == shape
    with pytest.raises(ValueError, match=r"expects x of shape \[batch, height, width, dim=8\]; got \(1, 5, 5, 0\)"):
        module(torch.randn(1, 5, 5, 0))
