"""The Triton kernels under ``TRITON_INTERPRET=1`` on CPU tensors (CI has no GPU).

Small shapes, float32 and float16 only (bf16 ``tl.dot`` is wrong in the interpreter), one tile
config per launch (no autotuning here). The launchers are called directly: the ops are registered
for CUDA only. Skipped when triton is not installed, and on machines with CUDA (the GPU suite,
tests/gpu, covers those; interpreting there would also switch the real kernels off).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch

if torch.cuda.is_available():
    pytest.skip("CUDA present: run tests/gpu instead", allow_module_level=True)
pytest.importorskip("triton")

from cases import Case
from gpu.naref import check, run_launchers
from interpret import run_checks
from query_box import BOX_CASES, check_box, check_piece_after_box, launcher_runner

F32, F16 = torch.float32, torch.float16

# Every feature at least once; sizes leave partial tiles at both borders of every axis.
CASES = [
    Case((9,), (3,), (1,), (1,), (False,), batch=1, dtype=F32),
    Case((19,), (4,), (2,), (1,), (True,), batch=1, head_dim=24, head_dim_v=24, dtype=F32),
    Case((21,), (5,), (1,), (5,), (False,), batch=1, rpb=True, dtype=F32),  # blocked (window) attention
    Case((20,), (6,), (1,), (3,), (True,), batch=1, additional=3, heads=4, kv_heads=1, dtype=F16),
    Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False), batch=1, rpb=True, dtype=F32),
    Case((7, 9), (4, 3), (1, 2), (2, 3), (True, False), batch=1, additional=2, heads=4, head_dim_v=16, dtype=F32),
    Case((9, 11), (5, 4), (1, 1), (1, 2), (False, True), batch=2, head_dim=16, head_dim_v=16, dtype=F16),
    Case((4, 5, 6), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True), batch=1, heads=2, kv_heads=1, dtype=F32),
]
# (fwd config, bwd config): 16-row tiles so that small problems still span several tiles
CONFIG = ([16, 16, 4, 1], [16, 16, 4, 1])


BLOCK_SPARSE = Case((32,), (16,), (1,), (16,), (False,), batch=1, head_dim=16, head_dim_v=16, dtype=F32)
# (name, case, fwd config, bwd config); [] = the default (large) tiles
RUNS = [(c.id, c, *CONFIG) for c in CASES] + [
    ("default-config", replace(CASES[4], rpb=False, head_dim=32, head_dim_v=32), [], []),
    ("block-sparse", BLOCK_SPARSE, *CONFIG),
    # KV-parallel backward (variant 1: dq by atomics in the dk/dv pass); TMA needs CUDA, so the forward
    # variant falls back to pointer loads here
    ("kv-parallel", CASES[5], [16, 16, 4, 1, 1], [16, 16, 4, 1, 1]),
    ("kv-parallel-rpb-default-tiles", CASES[4], [], [0, 0, 0, 0, 1]),
    # the dq pass with its own blocks (32-query tiles over 16-key tiles; the dk/dv pass keeps 16)
    ("dq-pass-config", CASES[7], CONFIG[0], [16, 16, 4, 1, 0, 32, 16, 4, 1]),
    # the forward's launch plans are cached per problem: each of these shares every tensor shape with
    # the one before it and differs in one parameter, so a key that missed it would launch a stale plan
    *(
        (f"plan-cache-{name}", replace(CASES[4], rpb=False, **kw), *CONFIG)
        for name, kw in (
            ("causal", dict(is_causal=(True, False))),
            ("dilation", dict(is_causal=(True, False), dilation=(1, 2))),
            ("stride", dict(is_causal=(True, False), dilation=(1, 2), stride=(2, 1))),
            ("not-causal", dict(dilation=(1, 2), stride=(2, 1))),
            ("window", dict(dilation=(1, 2), stride=(2, 1), kernel_size=(5, 3))),
        )
    ),
]
# Windows that are whole dilation groups (extent == kernel * dilation): the default forward is the
# group-wise kernel (config variant 2), whose persistent programs loop over several items here
GROUP_CASES = [
    Case((14, 14), (7, 7), (2, 2), (2, 3), (False, False), heads=4, kv_heads=2, head_dim=32, head_dim_v=32, dtype=F16),
    Case((12,), (4,), (3,), (1,), (False,), rpb=True, additional=2, head_dim=24, head_dim_v=16, dtype=F32),
    Case((4, 6, 3), (2, 3, 3), (2, 2, 1), (1, 1, 1), (False, False, False), batch=1, rpb=True, dtype=F32),
    Case((5, 6), (5, 6), (1, 1), (1, 1), (False, False), batch=3, heads=1, kv_heads=1, head_dim=16, dtype=F16),
]
RUNS += [
    ("groups-default-" + GROUP_CASES[0].id, GROUP_CASES[0], [], CONFIG[1]),
    *((f"groups-{c.id}", c, [0, 0, 0, 0, 2], CONFIG[1]) for c in GROUP_CASES[1:]),
]


# Queries as a box of the key grid (query_offset): small tiles, and the default ones for two cases
BOX_RUNS = [(f"box-{bc.id}", bc, *CONFIG) for bc in BOX_CASES] + [
    (f"box-default-config-{bc.id}", bc, [], []) for bc in (BOX_CASES[4], BOX_CASES[6])
]


def run_all() -> dict:
    """Every run, outputs poisoned (tests/interpret.run_checks)."""
    runs = [
        (name, partial(check, case, "cpu", run_launchers, fwd_config=fwd, bwd_config=bwd))
        for name, case, fwd, bwd in RUNS
    ]
    runs += [(name, partial(check_box, bc, "cpu", launcher_runner(fwd, bwd))) for name, bc, fwd, bwd in BOX_RUNS]
    runs += [(PIECE_RUN, partial(check_piece_after_box, "cpu"))]
    return run_checks(runs)


PIECE_RUN = "box-piece-after-box"  # the forward's plan cache and a box's pieces (query_box.check_piece_after_box)


@pytest.mark.parametrize("name", [r[0] for r in RUNS + BOX_RUNS] + [PIECE_RUN])
def test_triton_interpreted_matches_reference(name, interpreted):
    assert interpreted[name] is None, interpreted[name]


def test_block_sparse_tiles_are_full():
    """Stride and window aligned with the tiles: the tiles line up, so no key tile needs a mask."""
    from natten_kernels.triton.tiling import tile_shapes

    c = BLOCK_SPARSE
    assert tile_shapes(c.kernel_size, c.dilation, c.stride, c.spatial, 16, 16) == ((1, 1, 16), (1, 1, 16))


def test_triton_bad_config_is_a_value_error():
    from natten_kernels.triton.configs import parse_config

    with pytest.raises(ValueError, match="power of two"):
        parse_config([24, 16, 4, 1], 16, torch.float32)
    with pytest.raises(ValueError, match="must be"):
        parse_config([64, 32, 4, 3, 0, 64], 16, torch.float32, backward=True)
    with pytest.raises(ValueError, match=r"maxnreg must be 0 \(no cap\) or 32-255 registers, got 16"):
        parse_config([64, 32, 4, 3, 0, 16], 16, torch.float32)
    with pytest.raises(ValueError, match="dq block_k"):
        parse_config([64, 32, 4, 3, 0, 64, 48, 4, 3], 16, torch.float32, backward=True)


def test_whole_groups_take_the_group_forward():
    """Windows that are whole dilation groups (extent == kernel * dilation, not causal) get the
    group-wise forward by default (variant 2, its blocks not shrunk); anything else the box kernels,
    and the variant asked for where it cannot run is a ValueError."""
    from natten_kernels.triton.configs import parse_config
    from natten_kernels.triton.launch_forward import na_fused_forward
    from natten_kernels.triton.tiling import choose_config, whole_groups

    s5_d8 = ((56, 56), (7, 7), (8, 8), (1, 1), (False, False))
    assert whole_groups(*s5_d8[:3], s5_d8[4], 32, 2) == 49
    assert whole_groups((56, 56), (7, 7), (8, 8), (True, False), 32, 2) == 0  # causal
    assert whole_groups((56, 56), (7, 7), (1, 1), (False, False), 32, 2) == 0  # S5, no dilation
    assert whole_groups((57, 56), (7, 7), (8, 8), (False, False), 32, 2) == 0  # 8 groups of 8 rows, one of 1
    assert whole_groups((300,), (150,), (2,), (False,), 32, 2) == 0  # too many tokens
    assert whole_groups((64,), (64,), (1,), (False,), 128, 4) == 64  # dense 1D
    assert whole_groups((256,), (128,), (2,), (False,), 128, 4) == 0  # a stage of fp32 tiles too large
    assert choose_config(32, 2, *s5_d8) == [64, 64, 2, 2, 2, 128]
    assert choose_config(32, 2, *s5_d8, backward=True)[4] == 0  # the backward stays on the box kernels
    assert parse_config([], 64, torch.float32, ((256,), (128,), (2,), (1,), (False,)))[:5] == (128, 128, 8, 1, 2)
    q = torch.zeros(1, 20, 20, 2, 32)
    with pytest.raises(ValueError, match=r"whole dilation group .* got extent \[20, 20\], kernel_size \[7, 7\]"):
        na_fused_forward(q, q, q, None, None, None, [7, 7], [2, 2], [1, 1], [False, False], 1.0, [0, 0, 0, 0, 2])


def test_tile_efficiency_counts_pairs():
    """The analytic tile efficiency equals a brute-force count of the pairs the kernel computes."""
    from natten_kernels.triton.tiling import _window, tile_efficiency

    n, k, s, t, kb = 23, 5, 2, 4, 8
    for causal in (False, True):
        useful = sum(e - b for b, e in (_window(p, n, k, s, causal) for p in range(n)))
        computed = 0
        for q0 in range(0, n, t):
            lo = _window(q0, n, k, s, causal)[0]
            hi = _window(min(q0 + t, n) - 1, n, k, s, causal)[1]
            computed += t * kb * -(-(hi - lo) // kb)
        got = tile_efficiency((n,), (k,), (1,), (s,), (causal,), (1, 1, t), (1, 1, kb))
        assert abs(got - useful / computed) < 1e-12


def test_defaults_and_zero_entries():
    """``[]`` and ``0`` entries resolve per problem: small windows get smaller tiles than large ones."""
    from natten_kernels.triton.configs import parse_config

    small = parse_config([], 32, torch.float16, ((56, 56), (7, 7), (1, 1), (1, 1), (False, False)))
    large = parse_config([], 128, torch.bfloat16, ((32768,), (2048,), (1,), (1,), (False,)))
    assert small[0] * small[1] < large[0] * large[1]
    assert parse_config([0, 0, 0, 0, 1], 128, torch.bfloat16, ((4096,), (512,), (1,), (1,), (False,)))[4] == 1
    assert parse_config([128, 64, 8, 2], 128, torch.bfloat16)[4] == 0  # an explicit config without variant
    assert parse_config([0, 32, 4, 0], 64, torch.float16)[1:3] == (32, 4)
    # the forward's sixth entry, a register cap: the default's where measured, else none unless given
    assert small[5] == 128 and large[5] == 0
    assert parse_config([64, 32, 2, 3], 32, torch.float16)[5] == 0
    assert parse_config([0, 0, 0, 0, 0, 96], 32, torch.float16)[4:] == (0, 96)
    # TMA shapes measured with host-built descriptors are defaults only where those apply (no dilation)
    assert small[4] == 1
    assert parse_config([], 32, torch.float16, ((56, 56), (7, 7), (4, 4), (1, 1), (False, False)))[4] == 0
    # backward: the dq pass takes the main blocks unless given its own (0 entries: the main config's)
    assert parse_config([64, 32, 4, 3], 128, torch.bfloat16, backward=True)[5:] == (64, 32, 4, 3, 0)
    assert parse_config([64, 32, 4, 3, 0, 128, 0, 8, 3, 1], 128, torch.bfloat16, backward=True)[5:] == (
        128,
        32,
        8,
        3,
        1,
    )
