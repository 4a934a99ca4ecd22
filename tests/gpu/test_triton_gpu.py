"""The GPU suite: the Triton backend on CUDA against the float64 reference on upcast inputs.

Run on the GPU machine with the one command of docs/gpu.md. Skipped without a usable CUDA backend.
Cases: tests/cases.py's geometry (all features, generated from the backend's declared capabilities)
in float32 / float16 / bfloat16, head dims 8..256, partial tiles at every border, several tile
configs, an int64-indexing case over 2^31 elements, bitwise determinism and torch.compile.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from natten_kernels.backends.triton import TRITON

if TRITON.unavailable_reason() is not None:
    pytest.skip(f"triton backend unusable here: {TRITON.unavailable_reason()}", allow_module_level=True)

from cases import Case, fused_cases, large_case
from gpu.naref import check, make_inputs, run_api, run_launchers

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
DTYPES = (F32, F16, BF16)
CASES = fused_cases("cuda", dtypes=DTYPES, backend=TRITON)
assert CASES, "no case generated for the triton backend"

# head dims (multiples of 8 up to 256), every dtype, partial tiles at every border (sizes prime-ish)
HEAD_DIMS = [
    replace(c, head_dim=d, head_dim_v=d, dtype=dt)
    for (d, dt), c in zip(
        itertools.product((24, 32, 64, 128, 256), DTYPES),
        itertools.cycle(
            [
                Case((67,), (13,), (1,), (1,), (False,), rpb=True, heads=2),
                Case((37, 29), (7, 9), (2, 1), (1, 3), (False, True), heads=4, kv_heads=2, batch=1),
                Case((9, 13, 18), (3, 5, 7), (1, 2, 1), (2, 1, 1), (True, False, False), batch=1, additional=5),
            ]
        ),
    )
]
CONFIGS = [[16, 16, 4, 1], [32, 64, 4, 2], [64, 32, 4, 3], [128, 128, 8, 2]]
# the variants (fifth entry): forward TMA loads, backward KV parallelism (dq by atomics)
VARIANTS = [[16, 16, 4, 1, 1], [64, 32, 4, 3, 1], [128, 64, 8, 3, 1], [0, 0, 0, 0, 1]]
# backward configs whose dq pass has its own blocks, warps, stages and TMA flag (entries 6-10)
DQ_CONFIGS = [[64, 32, 4, 3, 0, 128, 64, 8, 3, 1], [32, 64, 4, 2, 0, 16, 16, 4, 1, 1], [0, 0, 0, 0, 0, 64, 32, 4, 2]]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api_matches_reference(case):
    check(case, "cuda", run_api)


@pytest.mark.parametrize("case", HEAD_DIMS, ids=[f"hd{c.head_dim}-{c.id}" for c in HEAD_DIMS])
def test_head_dims(case):
    check(case, "cuda", run_api)


@pytest.mark.parametrize("config", CONFIGS, ids=["x".join(map(str, c)) for c in CONFIGS])
@pytest.mark.parametrize("case", HEAD_DIMS[:6:2], ids=[c.id for c in HEAD_DIMS[:6:2]])
def test_tile_configs(case, config):
    c = replace(case, dtype=torch.float16)
    check(c, "cuda", run_launchers, fwd_config=config, bwd_config=config)


@pytest.mark.parametrize("config", [[64, 32, 2, 3, 0, 128], [32, 32, 1, 3, 1, 96]], ids=["cap128", "cap96-tma"])
@pytest.mark.parametrize("case", HEAD_DIMS[:6:2], ids=[c.id for c in HEAD_DIMS[:6:2]])
def test_register_caps(case, config):
    """The forward's register cap (sixth entry) spills at 96 registers; results must not change."""
    check(replace(case, dtype=torch.float16), "cuda", run_launchers, fwd_config=config, bwd_config=config[:4])


@pytest.mark.parametrize("config", VARIANTS, ids=["x".join(map(str, c)) for c in VARIANTS])
@pytest.mark.parametrize("case", CASES[::7], ids=[c.id for c in CASES[::7]])
def test_variants(case, config):
    """TMA loads (forward) and the KV-parallel backward on the generated feature cases."""
    check(replace(case, dtype=torch.float16), "cuda", run_launchers, fwd_config=config, bwd_config=config)


@pytest.mark.parametrize("config", DQ_CONFIGS, ids=["x".join(map(str, c)) for c in DQ_CONFIGS])
@pytest.mark.parametrize("case", CASES[3::7], ids=[c.id for c in CASES[3::7]])
def test_dq_pass_configs(case, config):
    """The dq pass with its own config (TMA key/value loads included) on the generated feature cases."""
    check(replace(case, dtype=torch.bfloat16), "cuda", run_launchers, bwd_config=config)


def test_kv_parallel_and_autotuner_through_the_api():
    """use_kv_parallelism_in_fused_na / use_autotuner pick the backend's candidates; results still match."""
    import natten
    from natten import autotuner

    case = replace(HEAD_DIMS[4], dtype=torch.float16)
    assert not torch.are_deterministic_algorithms_enabled()
    natten.use_backend("triton", force=True)  # else the autotuner also times flex, and may pick it
    natten.use_kv_parallelism_in_fused_na(True)
    natten.use_autotuner(True, True, warmup_steps_forward=1, warmup_steps_backward=1, steps_forward=1, steps_backward=1)
    try:
        autotuner.clear_cache()
        check(case, "cuda", run_api)
        chosen = autotuner.cached_configs()
        assert any(k[0] == "forward" for k in chosen) and any(k[0] == "backward" for k in chosen)
        assert all(len(c) == 5 and c[4] == 1 for k, c in chosen.items() if k[0] == "backward"), chosen
    finally:
        natten.use_autotuner(forward_pass=False, backward_pass=False)
        natten.use_kv_parallelism_in_fused_na(False)


TMA_CASES = [  # (case, the loads the launcher must pick for TMA configs)
    # rpb excludes causal axes (API)
    (
        Case((3, 37, 29), (3, 7, 9), rpb=True, head_dim=64, head_dim_v=64, heads=4, kv_heads=2, batch=3, additional=3),
        "host",
    ),
    (Case((19, 37), (5, 7), (1, 1), (2, 1), (True, False), head_dim=32, head_dim_v=32, heads=3, kv_heads=1), "host"),
    (Case((37, 29), (7, 9), (2, 3), (1, 2), (False, True), head_dim=64, head_dim_v=64), "device"),
    (Case((101,), (13,), (1,), (3,), (False,), head_dim=40, head_dim_v=40), "device"),
]


@pytest.mark.parametrize("case,path", TMA_CASES, ids=[f"{p}-{c.id}" for c, p in TMA_CASES])
def test_tma_host_and_device_descriptors(case, path):
    """Host-built descriptors (no dilation, full head dims) and per-program ones, forward and dq pass,
    partial tiles at the borders of every axis and of the batch."""
    from natten_kernels.triton import tma
    from natten_kernels.triton.layout import as3

    k = torch.empty(case.batch, *case.spatial, case.kv_heads, case.head_dim, device="cuda", dtype=torch.bfloat16)
    k3 = as3(k, case.rank)
    assert tma.operands(k3, k3, (1, 4, 8), case.head_dim, case.head_dim, (1, 1, *case.dilation)[-3:], True)[2] == path
    c = replace(case, dtype=torch.bfloat16)
    check(c, "cuda", run_launchers, fwd_config=[32, 32, 4, 2, 1], bwd_config=[32, 32, 4, 2, 0, 32, 32, 4, 2, 1])


def test_launch_plans_follow_alignment_and_strides():
    """The forward's cached launch plans key on 16-byte alignment and strides: the same shapes come as
    TMA-aligned tensors, as views 8 bytes off (pointer loads), as slices of wider heads (other
    strides) and aligned again, each against the reference."""
    from natten_kernels.triton.launch_forward import na_fused_forward
    from natten_legacy.reference import na_reference

    shape = (2, 19, 37, 2, 64)

    def make(kind):
        if kind == "offset":
            return torch.randn(math.prod(shape) + 4, device="cuda", dtype=torch.bfloat16)[4:].view(shape)
        if kind == "sliced":
            return torch.randn(*shape[:-1], 128, device="cuda", dtype=torch.bfloat16)[..., :64]
        return torch.randn(shape, device="cuda", dtype=torch.bfloat16)

    for kind in ("aligned", "offset", "sliced", "aligned"):
        q, k, v = (make(kind) for _ in range(3))
        args = ([5, 7], [1, 1], [1, 1], [False, False], 0.125, [64, 32, 4, 3, 1])
        out, _lse = na_fused_forward(q, k, v, None, None, None, *args)
        ref = na_reference(q.double(), k.double(), v.double(), (5, 7), scale=0.125)
        torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2, msg=kind)


SQUARE_KEY_TILES = [(64, [64, 64, 4, 3, 1]), (64, [128, 64, 8, 3, 1]), (32, [64, 32, 4, 3, 1])]


@pytest.mark.parametrize("head_dim,config", SQUARE_KEY_TILES, ids=[f"hd{d}-{c[0]}x{c[1]}" for d, c in SQUARE_KEY_TILES])
def test_tma_square_key_tiles(head_dim, config):
    """Square streamed tiles under warpgroup products came out wrong through TMA (Triton 3.6): the
    launchers load them by pointer; the forward, the dq pass with the same blocks and a dk/dv pass
    streaming square query tiles match the reference."""
    case = Case((45, 61), (13, 17), (1, 1), (1, 1), (False, False), heads=2, head_dim=head_dim, head_dim_v=head_dim)
    bwd = [64, head_dim, 4, 2, 0, *config[:4], 1]
    check(replace(case, batch=1, dtype=torch.bfloat16), "cuda", run_launchers, fwd_config=config, bwd_config=bwd)


def test_default_backward_streams_square_tiles_correctly():
    """Head dim 32, 13x13 window, no dilation: the default backward streams 32-row query tiles
    against 64-row key tiles, the shape the TMA guard sends to pointer loads (its dk was wrong)."""
    from natten_kernels.triton.tiling import choose_config

    case = Case((40, 44), (13, 13), (1, 1), (1, 1), (False, False), head_dim=32, head_dim_v=32, batch=1)
    assert choose_config(32, 2, case.spatial, case.kernel_size, (1, 1), (1, 1), (False, False), True)[:2] == [64, 32]
    check(replace(case, dtype=torch.float16), "cuda", run_api)


# windows that are whole dilation groups: the default forward is the group-wise kernel (variant 2)
WHOLE_GROUPS = [
    Case((21, 28), (7, 7), (3, 4), (2, 1), (False, False), heads=4, kv_heads=2, head_dim=32, head_dim_v=32, dtype=F16),
    Case((93,), (31,), (3,), (1,), (False,), rpb=True, additional=3, head_dim=64, head_dim_v=64, dtype=BF16),
    Case((6, 9, 12), (3, 3, 3), (2, 3, 4), (1, 1, 1), (False,) * 3, rpb=True, head_dim=128, head_dim_v=128, dtype=F32),
    Case((16, 8), (8, 8), (2, 1), (1, 1), (False, False), heads=3, kv_heads=1, head_dim=24, head_dim_v=24, dtype=BF16),
    Case((256,), (128,), (2,), (1,), (False,), batch=3, head_dim=64, head_dim_v=32, dtype=F16),
]


@pytest.mark.parametrize("case", WHOLE_GROUPS, ids=[c.id for c in WHOLE_GROUPS])
def test_whole_group_forward(case, poisoned):
    """Through the API (its backward is the box kernels'), every output written (poisoned), and the
    plan is the group-wise kernel's, whose persistent grid is resized to one wave after its first
    launch."""
    from natten_kernels.triton import launch_forward
    from natten_kernels.triton.configs import parse_config
    from natten_kernels.triton.fused_forward_groups import na_fwd_groups_kernel

    d = max(case.head_dim, case.head_dim_v)
    geometry = (case.spatial, case.kernel_size, case.dilation, case.stride, case.is_causal)
    assert parse_config([], d, case.dtype, geometry).variant == 2
    launch_forward.clear_plans()
    check(case, "cuda", run_api)
    plans = [p for p in launch_forward._FORWARD_PLANS.values() if p.kernel is na_fwd_groups_kernel]
    assert plans and all(p.persistent is None for p in plans)
    items = case.batch * math.prod(case.dilation) * case.heads
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert all(min(items, sms) <= p.grid[0] <= items for p in plans)


def test_whole_group_variant_needs_whole_groups():
    q = torch.randn(1, 20, 20, 2, 32, device="cuda", dtype=torch.float16)
    from natten_kernels.triton.launch_forward import na_fused_forward

    with pytest.raises(ValueError, match="whole dilation group"):
        na_fused_forward(q, q, q, None, None, None, [7, 7], [2, 2], [1, 1], [False, False], 1.0, [0, 0, 0, 0, 2])


def test_default_configs_follow_the_window():
    """Small windows get small tiles (tile efficiency), large ones the fastest 128-row tiles."""
    from natten_kernels.triton.configs import parse_config

    small = parse_config([], 64, torch.float16, ((128, 128), (13, 13), (1, 1), (1, 1), (False, False)))
    large = parse_config([], 128, torch.bfloat16, ((32768,), (2048,), (1,), (1,), (False,)))
    assert small[0] * small[1] < large[0] * large[1]
    assert large[0] == 128


def test_large_problem_bf16():
    """A realistic 2D problem (many full and partial tiles) in bf16."""
    case = large_case((45, 61), (13, 17), heads=4, kv_heads=4, head_dim=64, dtype=BF16)
    check(case, "cuda", run_api)


def test_block_sparse_stride():
    case = large_case((64, 64), (16, 16), stride=(16, 16), head_dim=64, dtype=BF16)
    check(case, "cuda", run_api)


def test_backward_bitwise_deterministic():
    torch.use_deterministic_algorithms(True)
    try:
        case = replace(HEAD_DIMS[1], dtype=torch.bfloat16)
        runs = []
        for _ in range(2):
            t = make_inputs(case, "cuda", case.dtype, seed=3)
            up = torch.randn(
                *t["q"].shape[:-1],
                case.head_dim_v,
                device="cuda",
                dtype=case.dtype,
                generator=torch.Generator("cuda").manual_seed(5),
            )
            _out, _lse, g = run_api(case, t, up, torch.zeros(t["q"].shape[:-1], device="cuda"))
            runs.append(g)
        for name in runs[0]:
            assert torch.equal(runs[0][name], runs[1][name]), name
    finally:  # later tests turn KV parallelism / the autotuner on, which deterministic mode refuses
        torch.use_deterministic_algorithms(False)


def test_int64_indexing_over_2_31_elements():
    """q/k/v/out hold more than 2^31 elements each: offsets must be 64-bit. Checked on the last tokens
    (upstream gradient is zero elsewhere, so the slice's gradients are exact) against the reference."""
    from natten_legacy.reference import na_reference

    import natten.functional as F

    H, D, k = 8, 64, 7
    L = (1 << 31) // (H * D) + 4099
    g = torch.Generator("cuda").manual_seed(0)
    q, kk, v = (torch.randn(1, L, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    assert q.numel() > 2**31
    for x in (q, kk, v):
        x.requires_grad_(True)
    out = F.na1d(q, kk, v, k)
    M = 256
    up = torch.zeros_like(out)
    up[:, -M:] = torch.randn(1, M, H, D, device="cuda", dtype=out.dtype, generator=g)
    out.backward(up)
    sl = [x.detach()[:, -M:].double().requires_grad_(True) for x in (q, kk, v)]
    ref = na_reference(*sl, k)
    ref.backward(up[:, -M:].double())
    torch.testing.assert_close(out.detach()[:, -(M - k) :].double(), ref.detach()[:, -(M - k) :], atol=3e-2, rtol=0)
    for x, r in zip((q, kk, v), sl):
        torch.testing.assert_close(x.grad[:, -(M - 2 * k) :].double(), r.grad[:, -(M - 2 * k) :], atol=5e-2, rtol=0)


def test_torch_compile_fullgraph():
    from natten import NeighborhoodAttention2D

    m = NeighborhoodAttention2D(dim=128, num_heads=2, kernel_size=7, dilation=2).cuda().half()
    x = torch.randn(2, 20, 24, 128, device="cuda", dtype=torch.half)
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager)


def test_env_checks():
    from natten_kernels import env

    assert env.has_fna() and env.has_gemm() and env.has_half() and env.has_tf32_gemm()
    assert env.has_bfloat() == (env.get_device_cc() >= 80)
    assert env.get_device_cc() >= 80
