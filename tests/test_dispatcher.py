"""Declarative backends, the dispatcher's walk and refusals, and the environment checks."""

import pytest
import torch
from natten_kernels import dispatcher, env
from natten_kernels.backends import BACKENDS, Backend, Problem

import natten
from natten import context


def _problem(**kw):
    base = dict(family="fused", device="cpu", dtype=torch.float32, rank=2, head_dim=32, head_dim_v=32)
    base.update(kw)
    return Problem(**base)


FAKE_GEMM = Backend(
    name="fake-gemm",
    families=frozenset({"fused"}),
    devices=frozenset({"cpu"}),
    dtypes=frozenset({torch.float16}),
    features=frozenset({"causal"}),
    kinds=frozenset({"gemm"}),
    max_head_dim=64,
    head_dim_multiple=8,
)


def test_cpu_backend_is_chosen_for_every_feature():
    feats = frozenset(
        {
            "causal",
            "dilation",
            "stride",
            "rpb",
            "additional_kv",
            "gqa",
            "backward",
            "forward_ad",
            "deterministic_backward",
        }
    )
    for family in ("fused", "unfused"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            assert dispatcher.select(_problem(family=family, dtype=dtype, features=feats)).name == "cpu"


@pytest.mark.parametrize(
    "problem,reason",
    [
        (_problem(dtype=torch.float32), "dtype float32 not supported (supports float16)"),
        (_problem(dtype=torch.float16, head_dim=128), "head dim 128 > 64"),
        (_problem(dtype=torch.float16, head_dim=20, head_dim_v=20), "head dim 20 is not a multiple of 8"),
        (_problem(dtype=torch.float16, features=frozenset({"rpb"})), "does not support rpb"),
        (_problem(family="unfused", dtype=torch.float16), "no unfused kernels"),
        (_problem(device="cuda", dtype=torch.float16), "runs on cpu, not cuda"),
    ],
)
def test_refusal_reasons(problem, reason):
    assert FAKE_GEMM.refusal(problem) == reason


def test_toggles_skip_backend_kinds_and_order_matters():
    p = _problem(dtype=torch.float16, features=frozenset({"causal"}))
    assert dispatcher.select(p, backends=[FAKE_GEMM, *BACKENDS]).name == "fake-gemm"
    natten.disable_gemm_na()
    chosen = dispatcher.select(p, context.disabled_backend_kinds(), backends=[FAKE_GEMM, *BACKENDS])
    assert chosen.name == "cpu"
    with pytest.raises(
        dispatcher.NoBackendError, match="fake-gemm: gemm kernels are disabled by the dispatcher settings"
    ):
        dispatcher.select(p, context.disabled_backend_kinds(), backends=[FAKE_GEMM])


def test_no_backend_error_lists_all():
    with pytest.raises(dispatcher.NoBackendError) as e:
        dispatcher.select(_problem(device="mps"), backends=[FAKE_GEMM, *BACKENDS])
    msg = str(e.value)
    assert "fake-gemm: runs on cpu, not mps" in msg and "cpu: runs on cpu, not mps" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answers")
def test_env_checks_without_cuda():
    """Without CUDA the checks answer for the CPU: half types and the fused ops run there, tensor-core
    kernels do not; asked about a CUDA device index, everything is False."""
    for fn in (env.has_cuda, natten.has_cuda):
        assert fn() is False
    assert env.current_device() == "cpu" and env.current_device(0) == "cuda:0"
    for fn in (natten.has_half, natten.has_bfloat, natten.has_fna):
        assert fn() is True
    for fn in (natten.has_gemm, natten.has_fp32_gemm, natten.has_tf32_gemm, natten.has_fp64_gemm):
        assert fn() is False
    for fn in (
        natten.has_half,
        natten.has_bfloat,
        natten.has_gemm,
        natten.has_fna,
        natten.has_fp32_gemm,
        natten.has_tf32_gemm,
        natten.has_fp64_gemm,
    ):
        assert fn(0) is False
    assert natten.get_device_cc() == 0 and natten.get_device_cc(0) == 0
    # what has_half() claims for the CPU holds: a float16 fused op runs there
    q = torch.randn(1, 8, 1, 8, dtype=torch.float16)
    assert natten.functional.na1d(q, q, q, 3).dtype == torch.float16


def test_env_checks_at_every_seed_import_path():
    import natten.functional as F
    import natten.utils as U

    assert F.get_device_cc is U.get_device_cc is natten.get_device_cc
    for name in ("has_gemm", "has_fp32_gemm", "has_tf32_gemm", "has_fp64_gemm"):
        assert getattr(F, name) is getattr(natten, name)
    for name in ("has_cuda", "has_half", "has_bfloat", "has_fna"):
        assert callable(getattr(natten, name))


def test_info_reports_backends(capsys):
    from natten import info

    info.main()
    out = capsys.readouterr().out
    assert "natten 1.0.0" in out and "torch " in out
    assert "cpu" in out and "usable" in out
