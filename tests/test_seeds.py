"""The seeds' usage examples, run as a new user would (``is_casual`` read as ``is_causal``)."""

import torch

import natten


def test_module_examples():
    from natten import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

    na1d = NeighborhoodAttention1D(dim=128, num_heads=4, kernel_size=7, dilation=2, is_causal=True)
    na2d = NeighborhoodAttention2D(dim=128, num_heads=4, kernel_size=7, dilation=2)
    na3d = NeighborhoodAttention3D(dim=128, num_heads=4, kernel_size=7, dilation=2)
    na3d_video = NeighborhoodAttention3D(
        dim=128, kernel_size=(7, 9, 9), dilation=(1, 1, 1), is_causal=(True, False, False), num_heads=4
    )
    na3d_with_bias = NeighborhoodAttention3D(
        dim=128, kernel_size=(7, 9, 9), dilation=(1, 1, 1), is_causal=False, rel_pos_bias=True, num_heads=4
    )
    old = NeighborhoodAttention3D(dim=128, kernel_size=7, kernel_size_d=5, dilation=2, dilation_d=3, num_heads=4)
    assert na1d(torch.randn(2, 20, 128)).shape == (2, 20, 128)
    assert na2d(torch.randn(2, 14, 15, 128)).shape == (2, 14, 15, 128)
    assert na3d(torch.randn(1, 14, 14, 14, 128)).shape == (1, 14, 14, 14, 128)
    assert na3d_video(torch.randn(1, 8, 9, 10, 128)).shape == (1, 8, 9, 10, 128)
    assert na3d_with_bias(torch.randn(1, 8, 9, 10, 128)).shape == (1, 8, 9, 10, 128)
    assert old(torch.randn(1, 15, 14, 14, 128)).shape == (1, 15, 14, 14, 128)


def test_unfused_examples():
    from natten.functional import na1d_av, na1d_qk, na2d_av, na2d_qk, na3d_av, na3d_qk

    query_1d, key_1d, value_1d = (torch.randn(2, 4, 40, 32) for _ in range(3))
    attn_1d = na1d_qk(query_1d, key_1d, kernel_size=7, dilation=4, is_causal=True)
    attn_1d = attn_1d.softmax(dim=-1)
    output_1d = na1d_av(attn_1d, value_1d, kernel_size=7, dilation=4, is_causal=True)
    assert output_1d.shape == value_1d.shape

    query_2d, key_2d, value_2d = (torch.randn(2, 4, 30, 30, 32) for _ in range(3))
    rpb_2d = torch.randn(4, 13, 13)
    attn_2d = na2d_qk(query_2d, key_2d, rpb=rpb_2d, kernel_size=7, dilation=4)
    attn_2d = attn_2d.softmax(dim=-1)
    output_2d = na2d_av(attn_2d, value_2d, kernel_size=7, dilation=4)
    assert output_2d.shape == value_2d.shape

    query_3d, key_3d, value_3d = (torch.randn(1, 2, 8, 10, 10, 16) for _ in range(3))
    attn_3d = na3d_qk(query_3d, key_3d, kernel_size=(7, 9, 9), dilation=(1, 1, 1), is_causal=(True, False, False))
    attn_3d = attn_3d.softmax(dim=-1)
    output_3d = na3d_av(attn_3d, value_3d, kernel_size=(7, 9, 9), dilation=(1, 1, 1), is_causal=(True, False, False))
    assert output_3d.shape == value_3d.shape


def test_fused_examples():
    from natten.functional import na1d, na2d, na3d

    query_1d, key_1d, value_1d = (torch.randn(2, 40, 4, 32) for _ in range(3))
    query_2d, key_2d, value_2d = (torch.randn(2, 30, 30, 4, 32) for _ in range(3))
    query_3d, key_3d, value_3d = (torch.randn(1, 28, 28, 28, 1, 8) for _ in range(3))
    output_1d = na1d(query_1d, key_1d, value_1d, kernel_size=7, dilation=4, is_causal=True)
    output_2d = na2d(query_2d, key_2d, value_2d, kernel_size=7, dilation=4, is_causal=False)
    output_3d = na3d(query_3d, key_3d, value_3d, kernel_size=7, dilation=4, is_causal=False)
    output_2d_t = na2d(query_2d, key_2d, value_2d, kernel_size=(7, 3), dilation=(1, 3), is_causal=(True, False))
    output_3d_t = na3d(
        query_3d, key_3d, value_3d, kernel_size=(7, 3, 5), dilation=(1, 1, 1), is_causal=(True, False, False)
    )
    for o, q in (
        (output_1d, query_1d),
        (output_2d, query_2d),
        (output_3d, query_3d),
        (output_2d_t, query_2d),
        (output_3d_t, query_3d),
    ):
        assert o.shape == q.shape and torch.isfinite(o).all()


def test_context_examples():
    from natten import (
        disable_autotuner,
        disable_fused_na,
        enable_fused_na,
        is_kv_parallelism_in_fused_na_enabled,
        set_memory_usage_preference,
        use_autotuner,
        use_fused_na,
        use_kv_parallelism_in_fused_na,
    )
    from natten.functional import disable_gemm_na, disable_tiled_na, enable_gemm_na, enable_tiled_na

    enable_fused_na()
    disable_fused_na()
    use_fused_na(True)
    use_autotuner(forward_pass=True, backward_pass=False)
    use_fused_na(False)
    disable_autotuner()
    use_kv_parallelism_in_fused_na(True)
    assert is_kv_parallelism_in_fused_na_enabled()
    use_kv_parallelism_in_fused_na(False)
    for pref in ("strict", "unrestricted", "default"):
        set_memory_usage_preference(pref)
    disable_gemm_na()
    enable_gemm_na()
    disable_tiled_na()
    enable_tiled_na()


def test_env_check_examples():
    from natten.functional import get_device_cc

    print(f"Your device is SM{get_device_cc()}.")
    for fn in (natten.has_cuda, natten.has_half, natten.has_bfloat, natten.has_gemm, natten.has_fp32_gemm):
        assert isinstance(fn(), bool)
    assert isinstance(natten.has_half(0), bool)
