"""Stand-in op registry for GPU testing when the compiled C++ library is unavailable.

The ``natten::`` schemas normally come from ``libnatten_kernels.so`` (csrc/ops.cpp). On a GPU machine
where that library cannot be built, :func:`ensure_ops` defines the same schemas from Python (docs/
internals.md), registers the fake implementations and the Triton CUDA kernels, so the Triton path
(dispatcher, op, autograd, torch.compile) runs unchanged. It does nothing when the library loaded.
"""

from __future__ import annotations

import torch

_SCHEMAS = {
    "na_fused_forward": "(Tensor q, Tensor k, Tensor v, Tensor? rpb, Tensor? additional_keys, "
    "Tensor? additional_values, int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal, "
    "float scale, int[] config=[]) -> (Tensor out, Tensor lse)",
    "na_fused_backward": "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
    "Tensor? grad_lse, Tensor? rpb, Tensor? additional_keys, Tensor? additional_values, int[] kernel_size, "
    "int[] dilation, int[] stride, bool[] is_causal, float scale, int[] config=[]) -> "
    "(Tensor dq, Tensor dk, Tensor dv, Tensor drpb, Tensor d_additional_keys, Tensor d_additional_values)",
    "na_qk_forward": "(Tensor q, Tensor k, Tensor? rpb, int[] kernel_size, int[] dilation, int[] stride, "
    "bool[] is_causal, int[] config=[]) -> Tensor attn",
    "na_qk_backward": "(Tensor grad_attn, Tensor q, Tensor k, Tensor? rpb, int[] kernel_size, int[] dilation, "
    "int[] stride, bool[] is_causal, int[] config=[]) -> (Tensor dq, Tensor dk, Tensor drpb)",
    "na_av_forward": "(Tensor attn, Tensor v, int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal, "
    "int[] config=[]) -> Tensor out",
    "na_av_backward": "(Tensor grad_out, Tensor attn, Tensor v, int[] kernel_size, int[] dilation, int[] stride, "
    "bool[] is_causal, int[] config=[]) -> (Tensor grad_attn, Tensor dv)",
}
_lib = None


def ensure_ops() -> bool:
    """True when the stand-in registry was installed (the compiled library is missing)."""
    global _lib
    from natten_kernels import _library

    if _library.load() or _lib is not None:
        return False
    _lib = torch.library.Library("natten", "DEF")
    for name, schema in _SCHEMAS.items():
        _lib.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    from natten_kernels.backends import triton as fused_cuda
    from natten_kernels.backends import triton_unfused as unfused_cuda
    from natten_kernels.ops import fake

    fake.register()
    fused_cuda.register_cuda_kernels()
    unfused_cuda.register_cuda_kernels()
    return True
