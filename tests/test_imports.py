"""Import paths of the seeds, and the optional packages' install hints."""

import importlib
import sys

import pytest
import torch

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


def test_one_version_everywhere():
    """The four distributions share one version, and natten's pins name it."""
    import re
    from pathlib import Path

    import natten_flops
    import natten_kernels
    import natten_legacy

    versions = {natten.__version__, natten_kernels.__version__, natten_flops.__version__, natten_legacy.__version__}
    assert len(versions) == 1, versions
    (v,) = versions
    root = Path(__file__).resolve().parent.parent / "packages"
    for toml in root.glob("*/pyproject.toml"):
        text = toml.read_text()
        assert re.search(rf'^version = "{re.escape(v)}"$', text, re.M), toml
        assert set(re.findall(r"natten-[a-z]+==([\w.]+)", text)) <= {v}, toml


def test_kernels_refuse_another_torch(monkeypatch):
    """Built against one torch, imported under another: an ImportError that names both and the fix."""
    import types

    from natten_kernels import _library

    fake = types.ModuleType("natten_kernels._build_info")
    fake.TORCH_VERSION = "1.99.0+elsewhere"
    monkeypatch.setitem(sys.modules, "natten_kernels._build_info", fake)
    with pytest.raises(ImportError, match=r"built against torch 1\.99\.0\+elsewhere.*torch==1\.99\.0.*rebuild"):
        _library.check_torch()
    fake.TORCH_VERSION = torch.__version__
    _library.check_torch()  # the build's own torch passes
