"""Queries as a box of the key grid (``query_offset``: a rank's shard inside its halo, natten.distributed)
on the GPU: the small cases of tests/query_box.py against the float64 reference, through the launchers
(small and default tiles) and the API; head dims and dtypes that take the TMA paths (whose query tiles
load at shifted coordinates); and the benchmark's S3 / S6 splits at their real sizes, every rank's box
against the whole-grid kernel (the anchor the at-scale suite checks) in float32."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from natten_kernels.backends.triton import TRITON

if TRITON.unavailable_reason() is not None:
    pytest.skip(f"triton backend unusable here: {TRITON.unavailable_reason()}", allow_module_level=True)

from natten_legacy.testing import assert_close_to_reference

from cases import Case
from natten.distributed.plan import make_layout, rank_plan
from natten.functional.fused import _na
from query_box import BOX_CASES, BoxCase, api_runner, check_box, check_piece_after_box, launcher_runner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from suite_gpu import DT, PROBLEMS

F16, BF16 = torch.float16, torch.bfloat16
SMALL = ([16, 16, 4, 1], [16, 16, 4, 1])


@pytest.mark.parametrize("bc", BOX_CASES, ids=lambda bc: bc.id)
@pytest.mark.parametrize("tiles", ["small", "default"])
def test_box_launchers(bc, tiles):
    check_box(bc, "cuda", launcher_runner(*(SMALL if tiles == "small" else ([], []))))


@pytest.mark.parametrize("tiles", ["small", "default"])
def test_piece_after_box(tiles):
    check_piece_after_box("cuda", SMALL[0] if tiles == "small" else ())


@pytest.mark.parametrize("bc", BOX_CASES, ids=lambda bc: bc.id)
def test_box_api(bc):
    check_box(bc, "cuda", api_runner)


# head dims that fill their blocks, no dilation: host-built TMA descriptors for the query tiles
TMA_BOXES = [
    BoxCase(Case((64, 80), (13, 13), heads=4, head_dim=64, head_dim_v=64, batch=1, dtype=BF16), (20, 0), (24, 80)),
    BoxCase(Case((48, 40), (9, 17), heads=2, head_dim=128, head_dim_v=128, batch=1, dtype=F16), (7, 11), (30, 21)),
    BoxCase(
        Case((12, 24, 32), (6, 8, 8), heads=2, head_dim=128, head_dim_v=128, batch=1, dtype=BF16),
        (3, 0, 0),
        (4, 24, 32),
    ),
    BoxCase(
        Case((60, 44), (9, 7), (2, 3), heads=4, kv_heads=2, head_dim=64, head_dim_v=64, dtype=BF16), (9, 5), (31, 30)
    ),
    BoxCase(Case((500,), (64,), (1,), (1,), (True,), head_dim=64, head_dim_v=64, batch=1, dtype=F16), (180,), (77,)),
]


@pytest.mark.parametrize("bc", TMA_BOXES, ids=lambda bc: bc.id)
def test_box_tma_paths(bc):
    check_box(bc, "cuda", api_runner)


def _splits():
    """(problem id, sharded axes, grid, rank) of the distributed suite's splits, a middle rank each."""
    for pid, axes, grid in (("S3", (0,), (4,)), ("S3-s16", (0,), (8,)), ("S6", (0,), (4,)), ("S6-s", (1, 2), (2, 4))):
        world = 1
        for n in grid:
            world *= n
        yield pid, axes, grid, world // 2 - 1


@pytest.mark.parametrize("pid,axes,grid,rank", list(_splits()), ids=lambda x: str(x))
def test_benchmark_split_rank_matches_whole_grid(pid, axes, grid, rank):
    """A rank of a distributed split of a benchmark problem (real spatial sizes and windows, 4 heads):
    its box on its extended grid, forward and backward, against the whole-grid kernel in float32 with
    the upstream gradient zero outside the box (the box's share of dk / dv); tolerance from the
    whole-grid kernel in the problem's dtype."""
    _pid, spatial, _b, _h, d, dts, kernel, dil, stride, causal = next(p for p in PROBLEMS if p[0] == pid)
    local = []
    for r in range(grid[0] * (grid[1] if len(grid) > 1 else 1)):
        coords = [r] if len(grid) == 1 else [r // grid[1], r % grid[1]]
        shape = list(spatial)
        for a, n, c in zip(axes, grid, coords):
            shape[a] = spatial[a] // n + (1 if c < spatial[a] % n else 0)
        local.append(tuple(shape))
    layout, why = make_layout(local, axes, grid)
    assert layout is not None, why
    plan = rank_plan(layout, (kernel, dil, stride, causal), rank)
    ext = (slice(None), *(slice(a.lo, a.hi) for a in plan.axes))
    box = (slice(None), *(slice(o, o + n) for o, n in zip(plan.offset, layout.local_shape(rank))))
    gen = torch.Generator("cuda").manual_seed(0)
    shape = (1, *spatial, 4, d)
    q, k, v, up = (torch.randn(shape, generator=gen, device="cuda") for _ in range(4))
    q, k, v = (x[ext].contiguous() for x in (q, k, v))
    up = up[ext].contiguous()
    outside = torch.ones(up.shape[:-1], dtype=torch.bool, device="cuda")
    outside[box] = False
    up.masked_fill_(outside[..., None], 0)
    rank_dims = len(spatial)

    def run(dtype, query, offset=None):
        x = [t.to(dtype).requires_grad_(True) for t in (query, k, v)]
        out = _na(rank_dims, *x, kernel, dil, causal, None, None, None, None, stride, False, offset)
        upstream = up if offset is None else up[box]
        return out.detach(), torch.autograd.grad(out, x, upstream.to(dtype).contiguous())

    ref_out, ref_g = run(torch.float32, q)
    eager_out, eager_g = run(DT[dts], q)
    out, g = run(DT[dts], q[box].contiguous(), tuple(plan.offset))
    assert_close_to_reference(out, ref_out[box], eager=eager_out[box], name="out")
    assert_close_to_reference(g[0], ref_g[0][box], eager=eager_g[0][box], name="dq")
    for name, got, ref, eager in zip(("dk", "dv"), g[1:], ref_g[1:], eager_g[1:]):
        assert_close_to_reference(got, ref, eager=eager, name=name)
