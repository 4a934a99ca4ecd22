"""Code written for NATTEN 0.17 runs: its names, signatures, enum, misspelling and nested convention."""

from __future__ import annotations

import warnings

import pytest
import torch

import natten
import natten.functional as F
from natten.context import AutotunerContext, NattenContext


def test_names_exist_and_do_what_they_say():
    natten.use_tiled_na(False)
    assert not natten.is_tiled_na_enabled()
    natten.use_tiled_na()
    natten.use_gemm_na(False)
    assert not natten.is_gemm_na_enabled()
    natten.use_gemm_na()
    assert natten.is_gemm_na_enabled() and natten.is_tiled_na_enabled()
    natten.use_tf32_in_gemm_na(False)
    assert not natten.is_tf32_in_gemm_na_enabled()
    assert natten.enable_tf32() is True and natten.is_tf32_in_gemm_na_enabled()
    assert natten.disable_tf32() is False
    natten.use_fna(False)
    assert not natten.is_fna_enabled() and not natten.is_fused_na_enabled()
    natten.use_fna(True)
    assert natten.has_fused_na is natten.has_fna


def test_tf32_switch_reaches_the_gpu_kernels_precision():
    from natten_kernels.triton.layout import precision

    natten.use_tf32_in_gemm_na(True)
    assert precision(torch.float32) == "tf32"
    natten.use_tf32_in_gemm_na(False)
    assert precision(torch.float32) == "ieee" and precision(torch.float16) == "tf32"


def test_use_autotuner_017_signature():
    natten.use_autotuner(False, True, False, True, 3, 4, 5, 6)  # positional, as 0.17 takes it
    assert not natten.is_autotuner_enabled_for_forward() and natten.is_autotuner_enabled_for_backward()
    assert not natten.is_autotuner_thorough_for_forward() and natten.is_autotuner_thorough_for_backward()
    assert (AutotunerContext.warmup_steps_forward, AutotunerContext.warmup_steps_backward) == (3, 4)
    assert (AutotunerContext.steps_forward, AutotunerContext.steps_backward) == (5, 6)
    natten.use_autotuner(thorough_mode_forward=True)  # None leaves the others as they are
    assert natten.is_autotuner_enabled_for_backward() and natten.is_autotuner_thorough_for_forward()
    natten.disable_autotuner()
    assert not natten.is_autotuner_enabled() and not natten.is_autotuner_thorough_for_forward()
    AutotunerContext.reset()
    assert AutotunerContext.steps_forward == 5
    with pytest.raises(ValueError, match="steps_forward"):
        natten.use_autotuner(steps_forward="abc")
    with pytest.raises(TypeError, match="thorough_mode_forward"):
        natten.use_autotuner(thorough_mode_forward="yes")


def test_thorough_mode_times_every_candidate(monkeypatch):
    """Without thorough mode the autotuner times the default and the best-rated few; with it, all."""
    from natten import autotuner, context
    from natten.functional import fused

    seen = []
    monkeypatch.setattr(autotuner, "tune", lambda key, cands, *a, **k: seen.append(len(cands)) or list(cands[0]))

    class Many:
        name = "many"

        def forward_configs(self, info):
            return [[], *([i] for i in range(1, 10))]

        backward_configs = forward_configs

    q = torch.randn(1, 8, 2, 4)
    shapes = type("S", (), {"heads": 2, "kv_heads": 2, "head_dim": 4})()
    for thorough, expected in ((False, context.THOROUGH_CANDIDATES), (True, 10)):
        natten.use_autotuner(True, True, thorough, thorough)
        info = fused._tuning_info(q, shapes)
        _, _fwd, bwd = fused._choose([Many()], info, (q, q, q, None, None, None), ([3], [1], [1], [False], 1.0))
        assert seen[-1] == expected and len(bwd) == expected


def test_memory_usage_preference_enum():
    natten.set_memory_usage_preference(natten.MemoryUsagePreference.Strict)
    assert natten.get_memory_usage_preference() == "strict" == natten.MemoryUsagePreference.Strict
    assert natten.is_memory_usage_strict()
    natten.set_memory_usage_preference("unrestricted")
    assert natten.get_memory_usage_preference() is natten.MemoryUsagePreference.Unrestricted


def test_natten_deterministic_mode():
    """0.17: natten's own mode refuses KV parallelism and the autotuner with an error; PyTorch's with
    a warning (a warnings.warn, so filters see it)."""
    assert not natten.are_deterministic_algorithms_enabled()
    natten.use_deterministic_algorithms()
    assert natten.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="deterministic"):
        natten.use_autotuner(True)
    with pytest.raises(RuntimeError, match="deterministic"):
        natten.use_kv_parallelism_in_fused_na(True)
    natten.use_deterministic_algorithms(False)
    torch.use_deterministic_algorithms(True)
    assert not natten.are_deterministic_algorithms_enabled()
    with pytest.warns(UserWarning, match="deterministic"):
        natten.use_autotuner(True)
    with pytest.warns(UserWarning, match="deterministic"):
        natten.use_kv_parallelism_in_fused_na(True)
    assert not natten.is_autotuner_enabled() and not natten.is_kv_parallelism_in_fused_na_enabled()
    NattenContext.reset()


def test_flex_requests_select_the_flex_backend(monkeypatch):
    """0.17's use_flex_attention / force_flex_attention prefer / force the FlexAttention backend."""
    from natten_kernels.backends import flex

    assert flex.FLEX_CPU.unavailable_reason() is None  # its one-time self-check runs flex.forward too
    calls = []
    real = flex.forward
    monkeypatch.setattr(flex, "forward", lambda *a: calls.append(1) or real(*a))
    q = torch.randn(1, 9, 2, 8, dtype=torch.float64)
    expected = natten.functional.na1d(q, q, q, 3)
    natten.use_fused_na(True, use_flex_attention=True)
    assert natten.is_fused_na_enabled() and natten.context.preferred_backend() == ("flex", False)
    torch.testing.assert_close(natten.functional.na1d(q, q, q, 3), expected)
    assert calls == [1]
    natten.force_flex_attention()
    assert natten.context.preferred_backend() == ("flex", True)
    natten.functional.na1d(q, q, q, 3)
    assert calls == [1, 1]


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_is_casual_is_a_deprecated_alias(rank):
    shape = (1, *(6,) * rank, 2, 8)
    q, k, v = (torch.randn(shape, dtype=torch.float64) for _ in range(3))
    fused = getattr(F, f"na{rank}d")
    with pytest.warns(DeprecationWarning, match="spell it is_causal="):
        got = fused(q, k, v, 3, is_casual=True)
    torch.testing.assert_close(got, fused(q, k, v, 3, is_causal=True))
    qh = q.movedim(-2, 1)
    qk, av = getattr(F, f"na{rank}d_qk"), getattr(F, f"na{rank}d_av")
    with pytest.warns(DeprecationWarning):
        attn = qk(qh, qh, 3, is_casual=True)
    torch.testing.assert_close(attn, qk(qh, qh, 3, is_causal=True))
    with pytest.warns(DeprecationWarning):
        av(attn.softmax(-1), qh, 3, is_casual=True)
    with pytest.raises(TypeError, match="pass only is_causal"):
        fused(q, k, v, 3, is_causal=(True,) * rank, is_casual=False)


def test_modules_take_017_arguments():
    with pytest.warns(DeprecationWarning, match="is_casual"):
        m = natten.NeighborhoodAttention2D(16, 2, 3, is_casual=True, use_experimental_ops=True)
    assert m.is_causal == (True, True) and m.use_experimental_ops
    m2 = natten.NeighborhoodAttention2D(16, 2, 3, 1, False, False, True, None, 0.0, 0.0, True)  # positional
    assert m2.use_experimental_ops
    with pytest.raises(TypeError, match=r"NeighborhoodAttention2D\(\) got unexpected keyword argument\(s\) bogus"):
        natten.NeighborhoodAttention2D(16, 2, 3, bogus=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        natten.NeighborhoodAttention3D(16, 2, 3)  # no warning without the misspelling


@pytest.mark.parametrize("batched", [True, False], ids=["0.17-whole-batches", "samples"])
def test_nested_unfused_both_conventions(batched):
    """0.17 nests whole batches [B_i, heads, L_i, D]; single samples [heads, L_i, D] work too."""
    parts = [torch.randn(2, 3, n, 8, dtype=torch.float64) for n in (9, 12)]
    comps = parts if batched else [p[0] for p in parts]
    nq = torch.nested.nested_tensor(comps)
    attn = F.na1d_qk(nq, nq, 3)
    out = F.na1d_av(
        attn.softmax(-1) if not attn.is_nested else torch.nested.nested_tensor([a.softmax(-1) for a in attn.unbind()]),
        nq,
        3,
    )
    for c, a, o in zip(comps, attn.unbind(), out.unbind()):
        x = c if batched else c[None]
        ref_a = F.na1d_qk(x, x, 3)
        torch.testing.assert_close(a if batched else a[None], ref_a)
        torch.testing.assert_close(o if batched else o[None], F.na1d_av(ref_a.softmax(-1), x, 3))
