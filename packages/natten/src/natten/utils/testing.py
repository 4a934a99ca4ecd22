"""``unittest`` skip decorators that NATTEN 0.17's test suites import, answered from natten's own
environment checks: code written against NATTEN 0.17 runs its tests here unchanged."""

from __future__ import annotations

import importlib.util
import unittest

import torch
from natten_kernels import env


def _skip_unless(condition: bool, why: str):
    return unittest.skipIf(not condition, why)


def skip_if_cuda_is_not_supported():
    return _skip_unless(env.has_cuda(), "natten has no usable CUDA backend here")


def skip_if_gemm_is_not_supported():
    return _skip_unless(env.has_cuda() and env.has_gemm(0), "no tensor-core (GEMM) kernels on this device")


def skip_if_fna_is_not_supported():
    return _skip_unless(env.has_cuda() and env.has_fna(0), "no fused CUDA kernels on this device")


def skip_if_gemm_does_not_support_double_precision():
    return _skip_unless(env.has_cuda() and env.has_fp64_gemm(0), "no float64 tensor-core kernels on this device")


def skip_if_nested_is_not_supported():
    return _skip_unless(True, "")  # the unfused ops take nested tensors (docs/api.md)


def skip_if_experimental_ops_are_not_supported():
    return _skip_unless(True, "")  # natten's ops are torch.compile-able: 0.17's "experimental ops"


def skip_if_fvcore_is_not_available():
    return _skip_unless(importlib.util.find_spec("fvcore") is not None, "fvcore is not installed")


def skip_if_triton_is_not_supported():
    return _skip_unless(importlib.util.find_spec("triton") is not None and torch.cuda.is_available(), "no triton/CUDA")


def skip_if_torch_compile_is_not_supported():
    return _skip_unless(hasattr(torch, "compile"), "torch.compile is missing")


def skip_if_torch_flop_count_is_not_supported():
    return _skip_unless(True, "")  # FlopCounterMode counts natten's ops (docs/flops.md)


__all__ = [name for name in dir() if name.startswith("skip_if_")]
