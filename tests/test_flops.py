"""FLOP formulas (natten_kernels.ops.flops), FlopCounterMode registration and the fvcore handles.

Expected counts are rebuilt from the reference oracle's neighborhood tables (valid slots per axis),
never from the closed forms under test.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from natten_kernels.ops import flops as F
from natten_legacy.reference import neighborhood_slots
from torch.utils.flop_counter import FlopCounterMode

import natten
from cases import Case, fused_cases, unfused_cases
from helpers import cast, fused_inputs
from natten.autograd import fused as autograd_fused
from natten.autograd import unfused as autograd_unfused


def _natten_flops():
    return pytest.importorskip("natten_flops", reason="natten-flops (and fvcore) not installed")


def oracle_pairs(spatial, kernel_size, dilation, stride, is_causal) -> int:
    """Attended (query, key) pairs of one batch element and head, counted from the oracle's tables."""
    pairs = 1
    for axis in zip(spatial, kernel_size, dilation, stride, is_causal):
        pairs *= int(neighborhood_slots(*axis)[1].sum())
    return pairs


@pytest.mark.parametrize("length", range(2, 23))
def test_axis_pairs_match_the_oracle(length):
    for k in range(1, length + 1):  # kernel 1 is the kernels' internal rank promotion
        for d, causal in itertools.product(range(1, length // k + 1), (False, True)):
            for s in range(1, k + 1):
                expected = int(neighborhood_slots(length, k, d, s, causal)[1].sum())
                assert F.axis_pairs(length, k, d, s, causal) == expected, (length, k, d, s, causal)


def test_axis_pairs_large_axis_closed_form():
    # Non-causal windows never shrink; causal s=1 sums min(p + 1, k) per dilation group.
    assert F.axis_pairs(32768, 2048) == 32768 * 2048
    assert F.axis_pairs(32768, 2048, is_causal=True) == 2048 * 2049 // 2 + (32768 - 2048) * 2048
    assert F.axis_pairs(4099, 512, 3, 64, True) == oracle_pairs((4099,), (512,), (3,), (64,), (True,))


# Explicit cases that cover causal + additional KV + GQA + Dv != D in every rank, then the generated ones.
CASES = [
    Case((16,), (5,), (2,), (2,), (True,), additional=3, heads=4, kv_heads=2, head_dim_v=4),
    Case((9, 10), (3, 4), (1, 2), (1, 2), (True, False), heads=4, kv_heads=1),
    Case((9, 10), (3, 3), (2, 1), (1, 1), (False, False), additional=2, rpb=True, head_dim_v=4),
    Case((4, 5, 6), (2, 3, 3), (1, 1, 2), (2, 1, 1), (False, True, False), additional=1, heads=4, kv_heads=2),
]
FUSED = CASES + fused_cases()
UNFUSED = CASES + unfused_cases()


def pairs(c: Case, with_additional: bool = True) -> int:
    """Attended pairs over batch and query heads."""
    per_head = oracle_pairs(c.spatial, c.kernel_size, c.dilation, c.stride, c.is_causal)
    if with_additional:
        per_head += math.prod(c.spatial) * c.additional
    return c.batch * c.heads * per_head


_FUSED_NAMES = {"q": "query", "k": "key", "v": "value"}


def _fused_inputs(c: Case, requires_grad: bool = True) -> dict:
    """Keyword inputs of na{1,2,3}d (tests/helpers.fused_inputs, in the case's dtype)."""
    t = cast(fused_inputs(c, requires_grad=requires_grad), c.dtype)
    return {_FUSED_NAMES.get(n, n): x for n, x in t.items()}


def _fused(c: Case, inputs):
    na = getattr(natten.functional, f"na{c.rank}d")
    return na(kernel_size=c.kernel_size, dilation=c.dilation, is_causal=c.is_causal, stride=c.stride, **inputs)


def _heads_first(c: Case, inputs):
    """Unfused-op inputs (no GQA there): heads-first q, k, v and additional KV of the same values."""

    def hf(name, x):
        if name == "rpb":
            return x
        x = x.repeat_interleave(c.heads // x.shape[-2], dim=-2)
        return x.movedim(-2, 1).contiguous()

    return {n: hf(n, x.detach()).requires_grad_(x.requires_grad) for n, x in inputs.items()}


def _unfused(c: Case, t):
    qk = getattr(natten.functional, f"na{c.rank}d_qk")
    av = getattr(natten.functional, f"na{c.rank}d_av")
    p = dict(kernel_size=c.kernel_size, dilation=c.dilation, is_causal=c.is_causal, stride=c.stride)
    attn = qk(t["query"], t["key"], additional_keys=t.get("additional_keys"), rpb=t.get("rpb"), **p).softmax(-1)
    return av(attn, t["value"], additional_values=t.get("additional_values"), **p)


def _natten_counts(counter: FlopCounterMode) -> dict[str, int]:
    counts = counter.get_flop_counts()["Global"]
    return {str(op).split(".")[-1]: n for op, n in counts.items() if str(op).startswith("natten.")}


# ---- FlopCounterMode: registered at import, no setup ------------------------------------------------


@pytest.mark.parametrize("case", FUSED, ids=lambda c: c.id)
def test_flop_counter_mode_fused(case):
    inputs = _fused_inputs(case)
    with FlopCounterMode(display=False) as counter:
        _fused(case, inputs).sum().backward()
    d, dv = case.head_dim, case.head_dim_v
    assert _natten_counts(counter) == {
        "na_fused_forward": 2 * pairs(case) * (d + dv),
        "na_fused_backward": 2 * pairs(case) * (3 * d + 2 * dv),
    }


@pytest.mark.parametrize("case", UNFUSED, ids=lambda c: c.id)
def test_flop_counter_mode_unfused(case):
    t = _heads_first(case, _fused_inputs(case))
    with FlopCounterMode(display=False) as counter:
        _unfused(case, t).sum().backward()
    n, d, dv = pairs(case, with_additional=False), case.head_dim, case.head_dim_v
    # Additional KV are dense matmuls in the autograd layer, counted by torch's own formulas.
    assert _natten_counts(counter) == {
        "na_qk_forward": 2 * n * d,
        "na_qk_backward": 4 * n * d,
        "na_av_forward": 2 * n * dv,
        "na_av_backward": 4 * n * dv,
    }


def test_backward_is_two_and_a_half_forward():
    """our GPU benchmarks' convention: with D == Dv the fused backward counts 2.5x the forward."""
    q = (2, 64, 64, 4, 32)
    params = ([13, 13], [1, 1], [1, 1], [False, False])
    fwd = F.flops("na_fused_forward", q, q, q, None, None, None, *params)
    bwd = F.flops("na_fused_backward", q, q, q, q, q, q[:-1], None, None, None, None, *params)
    assert fwd == 4 * 2 * 4 * 64 * 64 * 13 * 13 * 32
    assert bwd * 2 == 5 * fwd


def test_formulas_cover_every_op_and_registration_is_idempotent():
    from natten_kernels.ops import register as R
    from natten_kernels.ops.names import OPS
    from natten_kernels.ops.spec import SPECS
    from torch.utils import flop_counter

    assert set(SPECS) == set(OPS) and all(callable(s.macs) and callable(s.fake) for s in SPECS.values())
    R.annotate("na_fused_forward")  # already called by natten_kernels at import; a second call is a no-op
    for name in OPS:
        assert getattr(torch.ops.natten, name) in flop_counter.flop_registry


def test_flop_counter_mode_under_fake_tensors():
    """The formulas need shapes only: FakeTensor tracing (torch.compile, meta models) is counted too."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    case = CASES[1]
    with FakeTensorMode():
        inputs = _fused_inputs(case, requires_grad=False)
        with FlopCounterMode(display=False) as counter:
            _fused(case, inputs)
    assert _natten_counts(counter) == {"na_fused_forward": 2 * pairs(case) * (case.head_dim + case.head_dim_v)}


def _to_meta(inputs: dict) -> dict:
    return {n: torch.empty_like(x, device="meta").requires_grad_(x.requires_grad) for n, x in inputs.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_flop_counter_mode_on_the_meta_device(case):
    """docs/flops.md: counting on meta tensors works (the meta backend runs the fake implementations),
    fused and unfused, forward and backward, with the same counts as on real tensors."""
    inputs = _to_meta(_fused_inputs(case))
    with FlopCounterMode(display=False) as counter:
        out = _fused(case, inputs)
        out.sum().backward()
    assert out.device.type == "meta" and out.shape == (case.batch, *case.spatial, case.heads, case.head_dim_v)
    assert all(x.grad is not None and x.grad.shape == x.shape for x in inputs.values())
    d, dv = case.head_dim, case.head_dim_v
    assert _natten_counts(counter) == {
        "na_fused_forward": 2 * pairs(case) * (d + dv),
        "na_fused_backward": 2 * pairs(case) * (3 * d + 2 * dv),
    }
    t = _to_meta(_heads_first(case, _fused_inputs(case)))
    with FlopCounterMode(display=False) as counter:
        out = _unfused(case, t)
        out.sum().backward()
    assert out.device.type == "meta" and out.shape == t["value"].shape
    assert all(x.grad is not None and x.grad.shape == x.shape for x in t.values())
    n = pairs(case, with_additional=False)
    assert _natten_counts(counter) == {
        "na_qk_forward": 2 * n * d,
        "na_qk_backward": 4 * n * d,
        "na_av_forward": 2 * n * dv,
        "na_av_backward": 4 * n * dv,
    }


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_modules_on_the_meta_device(fused):
    natten.use_fused_na(fused)
    module = natten.NeighborhoodAttention3D(dim=16, num_heads=2, kernel_size=3, rel_pos_bias=True).to("meta")
    x = torch.empty(2, 4, 5, 6, 16, device="meta", requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out = module(x)
        out.sum().backward()
    assert out.shape == x.shape and out.device.type == "meta" and x.grad.shape == x.shape
    assert module.rpb.grad.shape == module.rpb.shape
    assert sum(_natten_counts(counter).values()) > 0


# ---- fvcore (one multiply-add = one flop) ---------------------------------------------------------


class _Fused(torch.nn.Module):
    def __init__(self, case):
        super().__init__()
        self.case = case

    def forward(self, *tensors):
        return _fused(self.case, dict(zip(self.names, tensors)))


class _Unfused(_Fused):
    def forward(self, *tensors):
        return _unfused(self.case, dict(zip(self.names, tensors)))


def _fvcore_total(module, inputs):
    from fvcore.nn import FlopCountAnalysis

    module.names = list(inputs)
    counter = FlopCountAnalysis(module, tuple(inputs.values()))
    assert _natten_flops().add_natten_handle(counter) is counter
    counter.unsupported_ops_warnings(False)
    return counter.total(), counter.by_operator()


@pytest.mark.parametrize("case", FUSED, ids=lambda c: c.id)
def test_fvcore_fused(case):
    total, by_op = _fvcore_total(_Fused(case), _fused_inputs(case))
    assert total == pairs(case) * (case.head_dim + case.head_dim_v)
    assert set(by_op) == {"PythonOp.FusedNeighborhoodAttention"}


@pytest.mark.parametrize("case", UNFUSED, ids=lambda c: c.id)
def test_fvcore_unfused(case):
    """Neighborhood part from natten's handles plus fvcore's own matmul count for additional KV:
    together exactly the fused count."""
    total, by_op = _fvcore_total(_Unfused(case), _heads_first(case, _fused_inputs(case)))
    d, dv = case.head_dim, case.head_dim_v
    assert total == pairs(case) * (d + dv)
    assert by_op["PythonOp.NeighborhoodQK"] == pairs(case, with_additional=False) * d
    assert by_op["PythonOp.NeighborhoodAV"] == pairs(case, with_additional=False) * dv


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize(
    "rank, spatial, kwargs",
    [
        (1, (20,), dict(kernel_size=5, is_causal=True)),
        (2, (8, 9), dict(kernel_size=3, dilation=(2, 1), rel_pos_bias=True)),
        (3, (4, 5, 6), dict(kernel_size=(2, 3, 3), is_causal=(True, False, False))),
    ],
    ids=["1d-causal", "2d-rpb", "3d-causal"],
)
def test_get_flops_module(fused, rank, spatial, kwargs):
    get_flops = _natten_flops().get_flops

    natten.use_fused_na(fused)
    dim, heads, batch = 32, 4, 2
    module = getattr(natten, f"NeighborhoodAttention{rank}D")(dim, heads, **kwargs).eval()
    x = torch.randn(batch, *spatial, dim)
    tokens = batch * math.prod(spatial)
    linear = tokens * dim * 3 * dim + tokens * dim * dim  # qkv and output projections
    pairs = oracle_pairs(spatial, module.kernel_size, module.dilation, module.stride, module.is_causal)
    attention = batch * heads * pairs * 2 * (dim // heads)
    assert get_flops(module, x, disable_warnings=True) == linear + attention


def test_handles_cover_every_autograd_function():
    functions = {
        name
        for mod in (autograd_fused, autograd_unfused)
        for name, obj in vars(mod).items()
        if isinstance(obj, type) and issubclass(obj, torch.autograd.Function) and obj.__module__ == mod.__name__
    }
    natten_flops = _natten_flops()
    assert set(natten_flops.FUNCTION_OPS) == functions
    assert set(natten_flops.NATTEN_HANDLES) == {f"prim::PythonOp.{name}" for name in functions}


def test_natten_flops_reexport():
    natten_flops = _natten_flops()
    import natten.flops

    assert natten.flops.get_flops is natten_flops.get_flops
    assert natten.flops.add_natten_handle is natten_flops.add_natten_handle
