"""The FlexAttention backend (natten_kernels/backends/flex.py) against the float64 reference oracle.

On the CPU, Flex runs its eager implementation (the module docstring says why), so these tests check
what every device shares: the window tables, the token permutation into tiles, the BlockMask, the
bias index, GQA, the additional-KV merge and the recompute backward. One test compiles Flex's CPU
kernel (inference) to check that the mask and bias functions lower through Inductor.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from natten_kernels.backends import flex
from natten_kernels.backends.base import Problem, TuningInfo
from natten_legacy.reference import na_reference, neighborhood_slots
from natten_legacy.testing import assert_close_to_reference

from cases import Case, fused_cases
from helpers import cast, fused_inputs, grads

_ADD = ("additional_keys", "additional_values")

# Tiled (a 128-token box divides every axis) and row-major problems with several Flex blocks.
MULTI_BLOCK = [
    Case((16, 16), (5, 7), (1, 2), (1, 1), (False, False), rpb=True, heads=4, kv_heads=2, dtype=torch.float32),
    Case((16, 24), (3, 3), (1, 1), (2, 3), (False, True), additional=3, head_dim_v=12, dtype=torch.bfloat16),
    Case((4, 8, 8), (3, 3, 5), (1, 2, 1), (1, 1, 2), (False, True, False), dtype=torch.float64),
    Case((8, 4, 8), (3, 3, 3), (2, 1, 1), (1, 1, 1), (False, False, False), rpb=True, dtype=torch.float16),
    Case((12, 20), (5, 3), (2, 3), (1, 1), (False, False), rpb=True, additional=1, dtype=torch.float32),
    Case((300,), (33,), (3,), (2,), (True,), heads=4, kv_heads=1, dtype=torch.float64),
]
CASES = fused_cases("cpu") + MULTI_BLOCK


def _params(case: Case) -> tuple:
    return (list(case.kernel_size), list(case.dilation), list(case.stride), list(case.is_causal))


def _flex(t: dict, case: Case, scale: float):
    return flex.forward(t["q"], t["k"], t["v"], t.get("rpb"), *(t.get(n) for n in _ADD), *_params(case), scale)


def _flex_grads(t: dict, case: Case, scale: float, out, lse, upstream, upstream_lse) -> dict:
    dq, dk, dv, drpb, dak, dav = flex.backward(
        upstream, t["q"], t["k"], t["v"], out, lse, upstream_lse, t.get("rpb"), *(t.get(n) for n in _ADD),
        *_params(case), scale,
    )  # fmt: skip
    got = {"q": dq, "k": dk, "v": dv, "rpb": drpb, "additional_keys": dak, "additional_values": dav}
    return {n: g for n, g in got.items() if n in t}


def _reference(t: dict, case: Case, scale: float):
    return na_reference(
        t["q"], t["k"], t["v"], case.kernel_size, case.dilation, case.stride, case.is_causal, rpb=t.get("rpb"),
        scale=scale, additional_keys=t.get(_ADD[0]), additional_values=t.get(_ADD[1]), return_lse=True,
    )  # fmt: skip


def _check_against_reference(case: Case, scale: float, with_lse_grad: bool = True) -> None:
    low = cast(fused_inputs(case), case.dtype)
    upcast = cast(low, torch.float64)  # the reference sees exactly the values Flex sees
    ref_out, ref_lse = _reference(upcast, case, scale)
    upstream = torch.randn_like(ref_out).to(case.dtype)
    upstream_lse = torch.randn_like(ref_lse) if with_lse_grad else None
    ref_grads = grads(
        (ref_out, ref_lse) if with_lse_grad else (ref_out,),
        upcast,
        (upstream.double(), upstream_lse)[: 1 + with_lse_grad],
    )
    lse_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32

    detached = {n: x.detach() for n, x in low.items()}
    out, lse = _flex(detached, case, scale)
    assert out.dtype == case.dtype and out.shape == ref_out.shape
    assert lse.dtype == lse_dtype and lse.shape == ref_lse.shape
    got = _flex_grads(
        detached, case, scale, out, lse, upstream, None if upstream_lse is None else upstream_lse.to(lse_dtype)
    )

    eager, eager_lse, eager_grads = None, None, {}
    if case.dtype != torch.float64:  # the same math in the same dtype, by plain torch
        eager, eager_lse = _reference(low, case, scale)
        eager_up = (upstream, upstream_lse.to(eager_lse.dtype)) if with_lse_grad else (upstream,)
        eager_grads = grads((eager, eager_lse)[: 1 + with_lse_grad], low, eager_up)
    assert_close_to_reference(out, ref_out, eager=eager, name="out")
    assert_close_to_reference(lse, ref_lse, eager=eager_lse, name="lse")
    for name, ref_g in ref_grads.items():
        assert got[name].dtype == low[name].dtype and got[name].shape == low[name].shape, name
        assert got[name].is_contiguous()
        assert_close_to_reference(got[name], ref_g, eager=eager_grads.get(name), name=f"d{name}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_backward_match_reference(case):
    _check_against_reference(case, case.head_dim**-0.5)


@pytest.mark.parametrize("scale", [0.0, -0.7], ids=["scale0", "negative"])
def test_any_finite_scale(scale):
    case = replace(MULTI_BLOCK[0], dtype=torch.float64)
    _check_against_reference(case, scale, with_lse_grad=False)


def test_token_orders():
    """Divisible shapes are permuted into tiles; others, and 1D, stay row-major."""
    assert flex.geometry((16, 16), (5, 7), (1, 2), (1, 1), (False, False), "cpu").box is not None
    assert flex.geometry((4, 8, 8), (3, 3, 5), (1, 2, 1), (1, 1, 2), (False, True, False), "cpu").box is not None
    assert flex.geometry((12, 20), (5, 3), (2, 3), (1, 1), (False, False), "cpu").box is None
    assert flex.geometry((300,), (33,), (3,), (2,), (True,), "cpu").box is None
    x = torch.randn(2, 8, 16, 3, 5)
    box = flex.tile_box((8, 16), (3, 3), (1, 1), (1, 1), (False, False))
    assert math.prod(box) == flex.BLOCK
    tiles = flex.to_tiles(x, (8, 16), box)
    assert tiles.shape == (2, 3, 128, 5)
    # the first Flex block is the box at the origin
    torch.testing.assert_close(tiles[:, :, : flex.BLOCK], flex.to_tiles(x[:, : box[0], : box[1]], box, None))
    assert torch.equal(flex.from_tiles(tiles, (8, 16), box), x)


# ---- the BlockMask, expanded, against the reference's neighborhoods (no Flex numerics) -----------------


def _reference_adjacency(spatial, kernel_size, dilation, stride, is_causal) -> torch.Tensor:
    """``bool [N, N]`` (row-major tokens): key in query's neighborhood, from neighborhood_slots."""
    rank = len(spatial)
    adjacency = torch.ones((), dtype=torch.bool)
    for a, (length, k, d, s, c) in enumerate(zip(spatial, kernel_size, dilation, stride, is_causal)):
        keys, valid = neighborhood_slots(length, k, d, s, c)
        axis = torch.zeros(length, length, dtype=torch.bool)
        rows = torch.arange(length)[:, None].expand_as(keys)
        axis[rows[valid], keys[valid]] = True
        shape = [1] * (2 * rank)
        shape[a], shape[rank + a] = length, length
        adjacency = adjacency & axis.reshape(shape)
    n = math.prod(spatial)
    return adjacency.reshape(n, n)


def _expand(geo, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The BlockMask as Flex's kernels read it (full blocks: every pair; partial: mask_mod; others:
    none), in Flex's token order, and the expanded partial blocks."""
    bm = geo.block_mask
    block = flex.BLOCK
    dense = torch.zeros(n, n, dtype=torch.bool)
    idx = torch.arange(n, dtype=torch.int32)
    partial_blocks = []
    for qb in range(bm.kv_num_blocks.shape[-1]):
        rows = slice(qb * block, (qb + 1) * block)
        for kb in bm.kv_indices[0, 0, qb, : bm.kv_num_blocks[0, 0, qb]].tolist():
            cols = slice(kb * block, (kb + 1) * block)
            dense[rows, cols] = geo.mask_mod(None, None, idx[rows, None], idx[None, cols])
            partial_blocks.append(dense[rows, cols])
        for kb in bm.full_kv_indices[0, 0, qb, : bm.full_kv_num_blocks[0, 0, qb]].tolist():
            dense[rows, kb * block : (kb + 1) * block] = True
    return dense, partial_blocks


MASK_CASES = [
    ((16, 16), (5, 7), (1, 2), (1, 1), (False, False)),  # tiled
    ((16, 24), (3, 9), (2, 1), (2, 3), (True, False)),  # tiled, causal, stride
    ((4, 8, 8), (3, 3, 5), (1, 2, 1), (1, 1, 2), (False, True, False)),  # tiled 3D
    ((12, 20), (5, 4), (2, 3), (5, 1), (False, True)),  # row-major, several blocks
    ((5, 6, 9), (3, 2, 3), (1, 3, 2), (1, 1, 3), (True, False, True)),  # row-major 3D, two blocks
    ((300,), (33,), (3,), (2,), (True,)),
    ((512,), (384,), (1,), (1,), (False,)),  # full blocks
    ((9,), (3,), (1,), (1,), (False,)),  # one partial block
]


@pytest.mark.parametrize("params", MASK_CASES, ids=[str(p[0]) for p in MASK_CASES])
def test_block_mask_expands_to_the_reference_neighborhood(params):
    spatial = params[0]
    n = math.prod(spatial)
    geo = flex.geometry(*params, "cpu")
    dense, partial = _expand(geo, n)
    order = flex.to_tiles(torch.arange(n).reshape(1, *spatial, 1, 1), spatial, geo.box)[0, 0, :, 0]
    assert sorted(order.tolist()) == list(range(n))  # a permutation
    row_major = torch.zeros_like(dense)
    row_major[order[:, None], order[None, :]] = dense
    expected = _reference_adjacency(*params)
    assert torch.equal(row_major, expected), f"{int((row_major != expected).sum())} pairs differ"
    # tight: a listed partial block is neither empty nor complete (those are skipped / full)
    for block in partial:
        assert block.any()
        assert not block.all() or block.numel() < flex.BLOCK**2
    if params[1] == (384,):
        assert int(geo.block_mask.full_kv_num_blocks.sum()) > 0


def test_axis_table_is_the_window_rule():
    """rank / first / last of one dilated, strided, causal axis, spelled out."""
    table = flex.axis_table(7, 2, 2, 1, True)  # groups {0, 2, 4, 6} and {1, 3, 5}
    assert table.tolist() == [
        [0, 0, 1], [7, 7, 8], [1, 0, 2], [8, 7, 9], [2, 1, 3], [9, 8, 10], [3, 2, 4],
    ]  # fmt: skip


# ---- paths, errors and declarations ---------------------------------------------------------------------


def test_no_lse_gradient_and_non_contiguous_inputs():
    case = MULTI_BLOCK[4]
    t = {n: x.detach() for n, x in fused_inputs(case).items()}
    t["q"] = t["q"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not t["q"].is_contiguous()
    out, lse = _flex(t, case, 0.3)
    go = torch.randn_like(out)
    got = _flex_grads(t, case, 0.3, out, lse, go, None)
    leaves = {n: x.clone().requires_grad_() for n, x in t.items()}
    ref_out, _ = _reference(leaves, case, 0.3)
    torch.testing.assert_close(out, ref_out)
    for name, g in grads((ref_out,), leaves, (go,)).items():
        torch.testing.assert_close(got[name], g, msg=name)


def test_backward_is_deterministic():
    torch.use_deterministic_algorithms(True)
    case = replace(MULTI_BLOCK[0], dtype=torch.float32)
    t = {n: x.detach().float() for n, x in fused_inputs(case).items()}
    out, lse = _flex(t, case, 0.25)
    go, gl = torch.randn_like(out), torch.randn_like(lse)
    first = _flex_grads(t, case, 0.25, out, lse, go, gl)
    again = _flex_grads(t, case, 0.25, out, lse, go, gl)
    for name in first:
        assert torch.equal(first[name], again[name]), name


def test_empty_batch():
    q = torch.randn(0, 9, 2, 8)
    out, lse = flex.forward(q, q, q, None, None, None, [3], [1], [1], [False], 1.0)
    assert out.shape == (0, 9, 2, 8) and lse.shape == (0, 9, 2) and lse.dtype == torch.float32
    dq, dk, dv, drpb, dak, dav = flex.backward(
        out, q, q, q, out, lse, None, None, None, None, [3], [1], [1], [False], 1.0
    )
    assert dq.shape == dk.shape == dv.shape == q.shape
    assert drpb.numel() == 0 and dak.numel() == 0 and dav.numel() == 0


def test_bad_arguments():
    q = torch.randn(1, 9, 2, 8)
    with pytest.raises(ValueError, match="kernel_size must have one entry per spatial axis"):
        flex.forward(q, q, q, None, None, None, [3, 3], [1], [1], [False], 1.0)
    with pytest.raises(ValueError, match="flex config must be"):
        flex.forward(q, q, q, None, None, None, [3], [1], [1], [False], 1.0, [7])
    with pytest.raises(ValueError, match=r"FLASH.*needs a CUDA device"):
        flex.forward(q, q, q, None, None, None, [3], [1], [1], [False], 1.0, [flex.FLASH])


def test_declared_capabilities():
    assert flex.cpu_unavailable_reason() is None
    assert flex.unavailable_reason() is None
    if not torch.cuda.is_available():
        assert "no CUDA device" in flex.cuda_unavailable_reason()
    full = frozenset({"causal", "dilation", "stride", "rpb", "additional_kv", "gqa", "backward"})
    cpu = Problem("fused", "cpu", torch.float64, 3, 5, 12, full | {"deterministic_backward"})
    assert flex.FLEX_CPU.refusal(cpu) is None
    assert "forward_ad" in flex.FLEX_CPU.refusal(replace(cpu, features=frozenset({"forward_ad"})))
    assert "runs on cuda" in flex.FLEX.refusal(cpu)
    assert "deterministic_backward" not in flex.FLEX.features and "forward_ad" not in flex.FLEX.features
    assert torch.float64 not in flex.FLEX.dtypes
    info = TuningInfo(batch=1, heads=2, kv_heads=2, tokens=64, head_dim=64)
    assert flex.forward_configs(info)[0] == [] and flex.backward_configs(info)[0] == []
    assert [flex.FLASH] not in flex.forward_configs(info) or flex.flash_available()


@pytest.mark.skipif(not torch.cpu._is_avx2_supported(), reason="Flex's compiled CPU kernel needs AVX2")
def test_mask_and_bias_compile_with_inductor():
    """torch.compile of Flex on the CPU (inference only, no LSE in torch 2.13): the same mask_mod and
    score_mod the CUDA path compiles, traced by dynamo and lowered by Inductor, give the reference."""
    from torch.nn.attention.flex_attention import flex_attention

    case = MULTI_BLOCK[0]
    spatial = case.spatial
    t = {n: x.detach().float() for n, x in fused_inputs(case).items()}
    geo = flex.geometry(spatial, *(tuple(p) for p in _params(case)), "cpu")
    qt, kt, vt = (flex.to_tiles(t[n], spatial, geo.box) for n in "qkv")
    rpb = t["rpb"]
    with torch.no_grad():
        out = torch.compile(flex_attention, dynamic=False)(
            qt, kt, vt, score_mod=lambda s, b, h, qi, ki: geo.score_mod(s, b, h, qi, ki, rpb),
            block_mask=geo.block_mask, scale=0.3, enable_gqa=True,
        )  # fmt: skip
    ref, _ = _reference({n: x.double() for n, x in t.items()}, case, 0.3)
    torch.testing.assert_close(flex.from_tiles(out, spatial, geo.box).double(), ref, atol=1e-4, rtol=1e-4)
