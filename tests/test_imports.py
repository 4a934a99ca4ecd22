"""Import paths of the seeds, and the optional packages' install hints."""

import importlib
import sys

import pytest

import natten


def test_seed_names_exist():
    from natten import (  # noqa: F401
        NeighborhoodAttention1D,
        NeighborhoodAttention2D,
        NeighborhoodAttention3D,
        disable_autotuner,
        disable_fused_na,
        enable_fused_na,
        has_bfloat,
        has_cuda,
        has_fna,
        has_gemm,
        has_half,
        is_kv_parallelism_in_fused_na_enabled,
        set_memory_usage_preference,
        use_autotuner,
        use_fused_na,
        use_kv_parallelism_in_fused_na,
    )
    from natten.functional import (  # noqa: F401
        disable_gemm_na,
        disable_tiled_na,
        enable_gemm_na,
        enable_tiled_na,
        get_device_cc,
        has_fp32_gemm,
        has_fp64_gemm,
        has_tf32_gemm,
        na1d,
        na1d_av,
        na1d_qk,
        na2d,
        na2d_av,
        na2d_qk,
        na3d,
        na3d_av,
        na3d_qk,
    )
    from natten.utils import get_device_cc as _  # noqa: F401


def test_legacy_resolves():
    import natten_legacy

    assert natten.LegacyNeighborhoodAttention is natten_legacy.LegacyNeighborhoodAttention2D
    assert natten.LegacyNeighborhoodAttention3D is natten_legacy.LegacyNeighborhoodAttention3D


def test_legacy_missing_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "natten_legacy", None)
    with pytest.raises(ImportError, match=r"natten-legacy.*pip install natten-legacy"):
        _ = natten.LegacyNeighborhoodAttention
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = natten.Nope


def test_flops_missing_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "natten_flops", None)
    monkeypatch.delitem(sys.modules, "natten.flops", raising=False)
    with pytest.raises(ImportError, match=r"natten-flops.*pip install natten-flops"):
        importlib.import_module("natten.flops")
    monkeypatch.delitem(sys.modules, "natten.flops", raising=False)
