"""Declarative backends, the dispatcher's walk and refusals, and the environment checks."""

import pytest
import torch
from natten_kernels import dispatcher, env
from natten_kernels.backends import BACKENDS, FEATURES, Backend, Problem
from natten_kernels.backends.cpu import CPU

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
    """Every feature but a query box (natten.functional pads the query for the CPU kernels instead)."""
    feats = frozenset(FEATURES) - {"query_box"}
    for family in ("fused", "unfused"):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            assert dispatcher.select(_problem(family=family, dtype=dtype, features=feats)).name == "cpu"
    assert "does not support query_box" in CPU.refusal(_problem(features=frozenset({"query_box"})))


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


def test_candidates_lists_every_fitting_backend_in_order():
    p = _problem(dtype=torch.float16, features=frozenset({"causal"}))
    assert [b.name for b in dispatcher.candidates(p, backends=[FAKE_GEMM, *BACKENDS])][:2] == ["fake-gemm", "cpu"]
    with pytest.raises(dispatcher.NoBackendError, match="fake-gemm: dtype float32 not supported"):
        dispatcher.candidates(_problem(), backends=[FAKE_GEMM])


# A second CPU backend with its own op names (natten::slow_na_fused_*): the library's kernel, 20 ms later.
# Its kernels are "module:function" paths like any backend's; this module is importable as test_dispatcher.
SLOW_CALLS = []


def slow_forward(*args):
    import time

    SLOW_CALLS.append(1)
    time.sleep(0.02)
    return torch.ops.natten.na_fused_forward(*args)


def slow_backward(*args):
    SLOW_CALLS.append(1)
    return torch.ops.natten.na_fused_backward(*args)


SLOW = Backend(
    name="slow",
    families=frozenset({"fused"}),
    devices=frozenset({"cpu"}),
    dtypes=frozenset({torch.float32, torch.float64}),
    features=frozenset({"backward"}),
    op_prefix="slow_",
    kernels={"na_fused_forward": f"{__name__}:slow_forward", "na_fused_backward": f"{__name__}:slow_backward"},
)


@pytest.fixture
def slow_backend():
    from natten_kernels.ops import register

    register.install([SLOW])  # defines natten::slow_na_fused_forward/backward with the spec's schema and fake
    BACKENDS.append(SLOW)
    SLOW_CALLS.clear()
    yield SLOW
    BACKENDS.remove(SLOW)


def test_a_backend_owns_its_ops(slow_backend):
    from natten_kernels.ops import spec

    op = torch.ops.natten.slow_na_fused_forward
    assert str(op.default._schema) == "natten::slow_na_fused_forward" + spec.SPECS["na_fused_forward"].schema
    q = torch.randn(1, 9, 2, 8, requires_grad=True)
    natten.use_backend("slow")
    out = natten.functional.na1d(q, q, q, 3)
    out.sum().backward()
    assert len(SLOW_CALLS) == 2  # forward and backward ran this backend's ops
    natten.use_backend(None)
    ref = natten.functional.na1d(q.detach(), q.detach(), q.detach(), 3)
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)
    assert len(SLOW_CALLS) == 2
    with torch.device("meta"):  # the spec's fake serves the new op too
        m = torch.empty(1, 9, 2, 8)
        assert op(m, m, m, None, None, None, [3], [1], [1], [False], 0.5)[0].shape == (1, 9, 2, 8)


def test_use_backend_prefers_or_forces(slow_backend):
    q = torch.randn(1, 9, 2, 8)
    natten.use_backend("slow")
    natten.functional.na1d(q, q, q, 3)
    assert len(SLOW_CALLS) == 1
    h = q.half()  # slow has no float16: the next backend in order runs it
    natten.functional.na1d(h, h, h, 3)
    assert len(SLOW_CALLS) == 1
    natten.use_backend("slow", force=True)
    with pytest.raises(dispatcher.NoBackendError, match="slow: dtype float16 not supported"):
        natten.functional.na1d(h, h, h, 3)
    with pytest.raises(ValueError, match=r"use_backend: name must be one of .*'cpu'.*got 'nope'"):
        natten.use_backend("nope")
    with pytest.raises(TypeError, match="force"):
        natten.use_backend("cpu", force=1)


def test_a_backend_cannot_replace_another_kernel():
    """A backend without an op prefix of its own on a device that has a kernel (the compiled CPU
    kernels here) is refused, instead of silently running for every backend."""
    import dataclasses

    from natten_kernels import _library
    from natten_kernels.ops import register

    if not _library.load():
        pytest.skip("needs the compiled library's CPU kernels")
    rogue = dataclasses.replace(SLOW, name="rogue", op_prefix="")
    with pytest.raises(ValueError, match="'rogue': natten::na_fused_forward already has a cpu kernel"):
        register.install([rogue])


def test_use_backend_takes_a_name_without_its_device(slow_backend):
    """A backend named only ``<name>-<device>`` is selected by ``<name>`` too."""
    import dataclasses

    BACKENDS[BACKENDS.index(slow_backend)] = dataclasses.replace(slow_backend, name="slow-cpu")
    try:
        natten.use_backend("slow", force=True)
        q = torch.randn(1, 9, 2, 8)
        natten.functional.na1d(q, q, q, 3)
        assert len(SLOW_CALLS) == 1
    finally:
        BACKENDS[BACKENDS.index(next(b for b in BACKENDS if b.name == "slow-cpu"))] = slow_backend


def test_autotuner_picks_the_faster_backend(slow_backend):
    from natten import autotuner

    q = torch.randn(1, 9, 2, 8)
    natten.use_backend("slow")  # first in order, but 20 ms slower per call
    natten.use_autotuner(forward_pass=True, warmup_steps_forward=1, steps_forward=3)
    natten.functional.na1d(q, q, q, 3)
    chosen = [v for k, v in autotuner.cached_configs().items() if k[0] == "forward"]
    assert [b.name for b, _config in chosen] == ["cpu"]  # one (backend, config) pair per problem
    SLOW_CALLS.clear()
    natten.functional.na1d(q, q, q, 3)
    assert not SLOW_CALLS


def test_flex_runs_what_the_cpu_backend_cannot():
    """Without the compiled library (the cpu backend unusable), FlexAttention's CPU path is chosen."""
    import dataclasses

    from natten_kernels.backends.cpu import CPU
    from natten_kernels.backends.flex import FLEX_CPU

    broken = dataclasses.replace(CPU, unavailable_reason=lambda: "libnatten_kernels.so is missing")
    problem = _problem(features=frozenset({"causal", "rpb", "backward"}))
    assert dispatcher.select(problem, backends=[broken, FLEX_CPU]).name == "flex-cpu"


def test_using_backend_restores_the_previous_choice():
    natten.use_backend("cpu")
    with pytest.raises(RuntimeError, match="inside"), natten.context.using_backend("flex", force=True):
        assert natten.context.preferred_backend() == ("flex", True)
        raise RuntimeError("inside")
    assert natten.context.preferred_backend() == ("cpu", False)


def test_without_the_compiled_library_flex_cpu_runs(tmp_path):
    """A copy of natten_kernels without libnatten_kernels.so, in a fresh interpreter: the ops are
    defined from their specs at import, the dispatcher picks flex-cpu, and its forward and backward
    match the reference."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import natten_kernels

    src = Path(natten_kernels.__file__).parent
    shutil.copytree(src, tmp_path / "natten_kernels", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = """
import torch, natten_kernels
from natten_kernels import _library
from natten_legacy.reference import na_reference
import natten.functional as F
from natten_kernels.backends import flex
assert not _library.load()
calls = []
forward = flex.forward
flex.forward = lambda *a, **kw: calls.append(1) or forward(*a, **kw)
q, k, v = (torch.randn(1, 6, 5, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
args = ((3, 3), (2, 1), (False, True))
out = F.na2d(q, k, v, *args)
assert calls, "flex-cpu did not run"
ref = na_reference(q, k, v, args[0], args[1], is_causal=args[2])
grads = torch.autograd.grad(out.sum(), (q, k, v))
ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
err = max(float((a - b).abs().max()) for a, b in zip((out, *grads), (ref, *ref_grads)))
assert err < 1e-10, err
print("ok")
"""
    paths = [str(tmp_path)] + [p for p in sys.path if p and not (Path(p) / "natten_kernels").is_dir()]
    env = {**__import__("os").environ, "PYTHONPATH": ":".join(paths)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
