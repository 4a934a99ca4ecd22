"""The GPU tier at the sizes users run (docs/gpu.md, "Correctness at scale"): sampled queries against
the exact window (tests/sampled_checks.py), forward (output, LSE) and backward (dq, dk, dv, drpb, additional KV).

* every problem of the benchmark suite (S1-S7 and variants) in its dtype and head dim;
* a sweep through the API's defaults: kernel sizes 2 to >= 128 per axis (1D to 4096), dilation,
  per-axis causal, stride, GQA, rpb, additional KV, every head dim the backend claims, fp16/bf16/fp32;
* every autotuner candidate (forward, backward, KV-parallel backward, the dq pass's own config, the
  whole-group forward) on problems large enough to run all their loops, in 1D, 2D, 3D and with
  dilation and causal axes;
* the configurations Triton 3.6 miscompiles (tma.resident_tiles_ok, tma.streamed_tiles_ok), which the
  launchers must route to pointer loads.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from natten_kernels.backends.triton import TRITON

if TRITON.unavailable_reason() is not None:
    pytest.skip(f"triton backend unusable here: {TRITON.unavailable_reason()}", allow_module_level=True)

from natten_kernels.triton import tiling, tuning_h200

from cases import Case
from sampled_checks import check_case, launchers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from suite_gpu import DT, PROBLEMS

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _bench_case(p) -> Case:
    _pid, spatial, B, H, D, dts, kernel, dil, stride, causal = p
    return Case(
        spatial, kernel, dil, stride, causal, heads=H, kv_heads=H, head_dim=D, head_dim_v=D, batch=B, dtype=DT[dts]
    )


BENCH = {p[0]: _bench_case(p) for p in PROBLEMS}


@pytest.mark.parametrize("pid", list(BENCH))
def test_benchmark_problem(pid):
    """The suite's problems as the benchmark runs them (defaults through the API), forward and backward."""
    check_case(BENCH[pid], "cuda", per_case=1, extra=6)


def _c(spatial, kernel, dilation=None, stride=None, causal=None, **kw) -> Case:
    r = len(spatial)
    return Case(
        tuple(spatial),
        tuple(kernel),
        tuple(dilation or (1,) * r),
        tuple(stride or (1,) * r),
        tuple(causal or (False,) * r),
        **kw,
    )


# window sizes where tiles, halos and key-tile loops change (per axis 2 .. >= 128; 1D to 4096)
SWEEP = [
    _c((37,), (2,), dtype=F16, head_dim=32, head_dim_v=32),
    _c((300,), (7,), (3,), dtype=BF16, head_dim=64, head_dim_v=64, rpb=True),
    _c((1000,), (64,), causal=(True,), dtype=BF16, head_dim=128, head_dim_v=128),
    _c((2500,), (255,), stride=(17,), dtype=F16, head_dim=128, head_dim_v=128, heads=4, kv_heads=1),
    _c((3000,), (1024,), dtype=BF16, head_dim=64, head_dim_v=64, additional=7),
    _c((8200,), (4096,), dtype=BF16, head_dim=128, head_dim_v=128, batch=1),
    _c((8200,), (4096,), causal=(True,), stride=(512,), dtype=F16, head_dim=64, head_dim_v=64, batch=1),
    _c((40, 45), (2, 3), dtype=F32, head_dim=32, head_dim_v=32),
    _c((64, 70), (7, 7), (4, 2), dtype=F16, head_dim=32, head_dim_v=32, rpb=True),
    _c((90, 97), (13, 13), causal=(True, False), dtype=BF16, head_dim=64, head_dim_v=64),
    _c((128, 128), (31, 31), stride=(4, 8), dtype=BF16, head_dim=128, head_dim_v=128, heads=4, kv_heads=2),
    _c((100, 120), (48, 48), dtype=BF16, head_dim=128, head_dim_v=128),
    _c((96, 96), (48, 48), dtype=F16, head_dim=128, head_dim_v=128, additional=5),
    _c((150, 140), (64, 65), dtype=BF16, head_dim=128, head_dim_v=128, batch=1),
    _c((160, 170), (79, 81), dtype=BF16, head_dim=64, head_dim_v=64, batch=1, rpb=True),
    _c((160, 160), (72, 80), stride=(16, 8), dtype=BF16, head_dim=128, head_dim_v=128, batch=1),
    _c((136, 150), (128, 128), dtype=BF16, head_dim=128, head_dim_v=128, batch=1, heads=2, kv_heads=1),
    _c((140, 96), (128, 2), causal=(False, True), dtype=F16, head_dim=64, head_dim_v=64, batch=1),
    _c((12, 13, 14), (2, 3, 2), dtype=F32, head_dim=64, head_dim_v=64),
    _c((16, 24, 24), (8, 12, 12), dtype=BF16, head_dim=128, head_dim_v=128),
    _c((14, 30, 44), (7, 9, 11), (2, 3, 2), dtype=F16, head_dim=32, head_dim_v=32, rpb=True),
    _c((20, 32, 40), (8, 12, 24), causal=(True, False, False), dtype=BF16, head_dim=128, head_dim_v=128, additional=3),
    _c((24, 40, 60), (18, 24, 24), stride=(6, 8, 8), dtype=BF16, head_dim=128, head_dim_v=128, batch=1),
    _c(
        (8, 40, 40),
        (4, 32, 32),
        causal=(True, True, False),
        dtype=BF16,
        head_dim=64,
        head_dim_v=64,
        batch=1,
        heads=4,
        kv_heads=2,
    ),
    _c((4, 12, 150), (2, 3, 128), dtype=BF16, head_dim=128, head_dim_v=128, batch=1),
    _c((5, 130, 9), (3, 128, 3), (1, 1, 3), dtype=F16, head_dim=64, head_dim_v=64, batch=1),
    # fp32 at the sizes of the benchmark's large windows (the configs shrink to fit shared memory)
    _c((160, 160), (80, 80), dtype=F32, head_dim=128, head_dim_v=128, batch=1),
    _c((20, 32, 48), (18, 24, 24), dtype=F32, head_dim=128, head_dim_v=128, batch=1),
    _c((4000,), (2048,), dtype=F32, head_dim=64, head_dim_v=64, batch=1),
    # a value head dim other than the key's
    _c((70, 90), (21, 33), dtype=BF16, head_dim=128, head_dim_v=64),
    _c((2000,), (300,), dtype=F16, head_dim=32, head_dim_v=96),
]
# every head dim the backend claims (multiples of 8 up to 256), on a 2D problem with several key tiles
HEAD_DIMS = [
    _c(
        (45, 52),
        (15, 19),
        dtype=(F16, BF16, F32)[i % 3],
        head_dim=d,
        head_dim_v=d,
        batch=1,
        causal=(i % 4 == 1, False),
        stride=(1, 1 + i % 3),
        heads=2 + (i % 2) * 2,
        kv_heads=2,
    )
    for i, d in enumerate(range(8, 257, 8))
]


@pytest.mark.parametrize("case", SWEEP, ids=[c.id for c in SWEEP])
def test_sweep(case):
    check_case(case, "cuda")


@pytest.mark.parametrize("case", HEAD_DIMS, ids=[f"hd{c.head_dim}-{c.id}" for c in HEAD_DIMS])
def test_head_dim(case):
    check_case(case, "cuda")


# problems large enough for every loop of a candidate: many key tiles, several query tiles per axis,
# partial tiles at the borders, two query heads per kv head (the dk/dv pass's GQA loop)
CANDIDATE_PROBLEMS = {
    "1d": _c((2999,), (389,), heads=4, kv_heads=2),
    "2d": _c((77, 90), (33, 40), heads=4, kv_heads=2),
    "3d": _c((13, 22, 36), (7, 12, 20), heads=4, kv_heads=2, batch=1),
    "2d-dil-causal": _c((77, 90), (19, 13), (2, 3), causal=(True, False), heads=4, kv_heads=2),
}
BUCKET_DTYPES = {32: F16, 64: BF16, 128: BF16, 256: F16}


def _candidate_params(backward: bool, kv_parallel: bool = False):
    out = []
    for d, dt in BUCKET_DTYPES.items():
        for cfg in tiling.candidates(d, backward, kv_parallel):
            for name, prob in CANDIDATE_PROBLEMS.items():
                case = replace(prob, head_dim=d, head_dim_v=d, dtype=dt)
                out.append(pytest.param(case, cfg, id=f"hd{d}-{'x'.join(map(str, cfg))}-{name}"))
    return out


@pytest.mark.parametrize("case,config", _candidate_params(False))
def test_forward_candidate(case, config):
    check_case(case, "cuda", launchers(fwd_config=config), backward=False)


@pytest.mark.parametrize("case,config", _candidate_params(True))
def test_backward_candidate(case, config):
    check_case(case, "cuda", launchers(bwd_config=config))


@pytest.mark.parametrize("case,config", _candidate_params(True, kv_parallel=True))
def test_kv_parallel_candidate(case, config):
    check_case(case, "cuda", launchers(bwd_config=config))


DQ_PASSES = [
    pytest.param(replace(p, head_dim=d, head_dim_v=d, dtype=BF16), [0, 0, 0, 0, 0, *dq], id=f"hd{d}-{name}")
    for d, dq in tuning_h200.DQ_PASS.items()
    for name, p in CANDIDATE_PROBLEMS.items()
]


@pytest.mark.parametrize("case,config", DQ_PASSES)
def test_dq_pass_default(case, config):
    """The dq pass's own default (128x64 tiles, TMA at head dim 128) beside the dk/dv pass's default."""
    check_case(case, "cuda", launchers(bwd_config=config))


WHOLE_GROUP = [
    _c((56, 56), (7, 7), (8, 8), dtype=F16, head_dim=32, head_dim_v=32, batch=24, heads=4),
    _c((24, 24, 24), (3, 3, 3), (8, 8, 8), dtype=BF16, head_dim=64, head_dim_v=64, batch=2, rpb=True),
    _c((1024,), (128,), (8,), dtype=BF16, head_dim=64, head_dim_v=64, batch=4, heads=4, kv_heads=2, additional=4),
]


@pytest.mark.parametrize("case", WHOLE_GROUP, ids=[c.id for c in WHOLE_GROUP])
def test_whole_group_forward_at_scale(case):
    """The whole-group forward (persistent: many items per program) and the box backward after it."""
    d = max(case.head_dim, case.head_dim_v)
    geo = (case.spatial, case.kernel_size, case.dilation, case.stride, case.is_causal)
    assert tiling.choose_config(d, case.dtype.itemsize, *geo)[4] == tiling.GROUP_VARIANT
    check_case(case, "cuda")


# (head dim, forward config, backward config): each would load a multi-axis resident tile through TMA
# against streamed tiles with as many rows as the padded head dim, which Triton 3.6 computes wrong
MISCOMPILED = [
    (128, [128, 128, 8, 2, 1], [128, 128, 8, 2, 0, 128, 128, 8, 2, 1]),
    (128, [64, 128, 4, 2, 1], [64, 128, 4, 2, 0, 64, 128, 4, 2, 1]),
    (64, [128, 64, 4, 2, 1], [128, 64, 8, 2, 0, 128, 64, 8, 2, 1]),
    (64, [64, 64, 4, 2, 1], [64, 64, 4, 2, 0, 64, 64, 4, 2, 1]),
    (32, [64, 32, 4, 2, 1], [64, 32, 4, 2, 0, 64, 32, 4, 2, 1]),
]


@pytest.mark.parametrize("rank", ["2d", "3d"])
@pytest.mark.parametrize("d,fwd,bwd", MISCOMPILED, ids=[f"hd{d}-{f[0]}x{f[1]}" for d, f, _b in MISCOMPILED])
def test_miscompiled_tma_configs_are_routed_around(rank, d, fwd, bwd):
    """Found on S3/S6 (perf notes v7): with the guard removed these gave outputs 300-3800x the rounding
    error and LSE off by 0.7-1.3 at every query; the launchers must load such resident tiles by pointer."""
    from natten_kernels.triton import tiling as tl
    from natten_kernels.triton import tma

    case = replace(CANDIDATE_PROBLEMS[rank], head_dim=d, head_dim_v=d, dtype=BF16 if d > 32 else F16)
    tq, _tk = tl.tile_shapes(case.kernel_size, case.dilation, case.stride, case.spatial, fwd[0], fwd[1])
    assert sum(b > 1 for b in tq) > 1 and not tma.resident_tiles_ok(tq, fwd[1], d, d)
    check_case(case, "cuda", launchers(fwd_config=fwd, bwd_config=bwd))
