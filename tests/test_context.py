"""Context flags: defaults, setters/getters, deterministic-mode interplay, and their effect."""

import pytest
import torch

import natten
from natten import context


def test_defaults():
    assert natten.is_fused_na_enabled()
    assert not natten.is_kv_parallelism_in_fused_na_enabled()
    assert not natten.is_autotuner_enabled()
    assert natten.get_memory_usage_preference() == "default" and natten.is_memory_usage_default()
    assert natten.is_gemm_na_enabled() and natten.is_tiled_na_enabled()


def test_fused_toggles():
    natten.disable_fused_na()
    assert not natten.is_fused_na_enabled()
    natten.enable_fused_na()
    assert natten.is_fused_na_enabled()
    natten.use_fused_na(False)
    assert not natten.is_fused_na_enabled()
    natten.use_fused_na(True, kv_parallel=True)
    assert natten.is_fused_na_enabled() and natten.is_kv_parallelism_in_fused_na_enabled()


def test_kv_parallelism_and_deterministic_mode():
    natten.use_kv_parallelism_in_fused_na(True)
    assert natten.is_kv_parallelism_in_fused_na_enabled()
    torch.use_deterministic_algorithms(True)
    assert not natten.is_kv_parallelism_in_fused_na_enabled()  # deterministic mode wins
    natten.use_kv_parallelism_in_fused_na(False)
    with pytest.warns(UserWarning, match="non-deterministic"):  # warnings filters see it
        natten.use_kv_parallelism_in_fused_na(True)
    torch.use_deterministic_algorithms(False)
    assert not natten.is_kv_parallelism_in_fused_na_enabled()  # it was refused, not deferred


def test_autotuner_and_deterministic_mode():
    natten.use_autotuner(forward_pass=True, backward_pass=False)
    assert natten.is_autotuner_enabled_for_forward() and not natten.is_autotuner_enabled_for_backward()
    natten.disable_autotuner()
    assert not natten.is_autotuner_enabled()
    natten.use_autotuner(True, True, warmup_steps_forward=2, steps_backward=3)
    assert context.get_autotuner_steps() == {"warmup": (2, 5), "steps": (5, 3)}
    torch.use_deterministic_algorithms(True)
    assert not natten.is_autotuner_enabled()
    with pytest.warns(UserWarning, match="deterministic"):
        natten.use_autotuner(True, True)
    with pytest.raises(ValueError, match="steps_forward must be a positive int; got 0"):
        natten.use_autotuner(True, steps_forward=0)


@pytest.mark.parametrize("pref", ["default", "strict", "unrestricted"])
def test_memory_preference(pref):
    natten.set_memory_usage_preference(pref)
    assert natten.get_memory_usage_preference() == pref
    assert [
        natten.is_memory_usage_default(),
        natten.is_memory_usage_strict(),
        natten.is_memory_usage_unrestricted(),
    ] == [pref == "default", pref == "strict", pref == "unrestricted"]


def test_gemm_and_tiled_toggles_reach_the_dispatcher():
    import natten.functional as F

    F.disable_gemm_na()
    assert context.disabled_backend_kinds() == {"gemm"}
    F.disable_tiled_na()
    assert context.disabled_backend_kinds() == {"gemm", "tiled"}
    F.enable_gemm_na()
    F.enable_tiled_na()
    assert context.disabled_backend_kinds() == frozenset()


def test_fused_flag_switches_module_path(monkeypatch):
    """use_fused_na(False) and training-time attention dropout route Modules to the unfused ops."""
    import natten.modules.neighborhood_attention as m

    calls = []
    monkeypatch.setattr(m, "_na", lambda *a, **k: calls.append("fused") or a[1])
    real_qk = m._qk
    monkeypatch.setattr(m, "_qk", lambda *a, **k: calls.append("unfused") or real_qk(*a, **k))
    x = torch.randn(1, 9, 8)
    mod = natten.NeighborhoodAttention1D(dim=8, num_heads=2, kernel_size=3, attn_drop=0.5)
    mod.eval()
    mod(x)
    natten.use_fused_na(False)
    mod(x)
    natten.use_fused_na(True)
    mod.train()
    mod(x)  # attention dropout active in training: unfused
    assert calls == ["fused", "unfused", "unfused"]
