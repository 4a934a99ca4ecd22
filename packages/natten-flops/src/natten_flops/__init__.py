"""fvcore FLOP counting for natten.

fvcore's convention applies: **one fused multiply-add counts as one "flop"** (so its totals are
MACs, half of what ``torch.utils.flop_counter.FlopCounterMode`` reports for the same ops). The
formulas are those of ``natten_kernels.ops.flops`` (docs/flops.md); this module only adapts them to
fvcore's TorchScript trace.

fvcore traces the model with ``torch.jit``, where each of natten's autograd Functions appears as
one ``prim::PythonOp.<ClassName>`` node. Its tensor arguments are the node's inputs and its other
arguments (``kernel_size``, ``dilation``, ``stride``, ``is_causal``, ``scale``, absent ``None``
optionals) are the node's ``scalar_args()``; ``cconv()`` gives their interleaving (``d`` = tensor,
``c`` = scalar). Each Function takes exactly the arguments of the op it wraps, so the op's formula
applies directly. Additional keys/values of the unfused ops are plain matmuls, counted by fvcore.
"""

from __future__ import annotations

from typing import Any

from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from natten_kernels.ops.flops import macs

__version__ = "1.0.0"

__all__ = ["FUNCTION_OPS", "NATTEN_HANDLES", "add_natten_handle", "get_flops", "python_op_args", "__version__"]

# natten's autograd Functions (natten/autograd/fused.py, unfused.py) -> the op each one wraps, with
# that op's argument order (tests/test_flops.py checks that every Function is listed).
FUNCTION_OPS = {
    "FusedNeighborhoodAttention": "na_fused_forward",
    "FusedNeighborhoodAttentionForwardAD": "na_fused_forward",
    "FusedNeighborhoodAttentionBackward": "na_fused_backward",
    "NeighborhoodQK": "na_qk_forward",
    "NeighborhoodQKForwardAD": "na_qk_forward",
    "NeighborhoodAV": "na_av_forward",
    "NeighborhoodAVForwardAD": "na_av_forward",
    "NeighborhoodQKBackward": "na_qk_backward",
    "NeighborhoodAVBackward": "na_av_backward",
}


def python_op_args(inputs: list, outputs: list) -> list[Any]:
    """The positional arguments of a traced ``prim::PythonOp``: tensors as shapes, the rest as given (a
    trailing bundle of op arguments, an object with ``op_args``, is spliced in)."""
    node = outputs[0].node()
    tensors = iter(inputs)
    scalars = iter(node.scalar_args())
    args = [get_shape(next(tensors)) if kind == "d" else next(scalars) for kind in node.cconv()]
    if args and hasattr(args[-1], "op_args"):
        args = [*args[:-1], *args[-1].op_args]
    return args


def _handle(op: str):
    def handle(inputs: list, outputs: list) -> int:
        return macs(op, *python_op_args(inputs, outputs))

    handle.__name__ = f"{op}_handle"
    return handle


NATTEN_HANDLES = {f"prim::PythonOp.{cls}": _handle(op) for cls, op in FUNCTION_OPS.items()}


def add_natten_handle(flop_ctr: FlopCountAnalysis) -> FlopCountAnalysis:
    """Register natten's handles on an fvcore ``FlopCountAnalysis`` and return it.

    Counts are multiply-adds (fvcore's "flops"): for every attended (query, key) pair, ``head_dim``
    for the logit and ``head_dim_v`` for the weighted sum; causal windows and additional KV exactly.
    """
    return flop_ctr.set_op_handle(**NATTEN_HANDLES)


def get_flops(model, input, disable_warnings: bool = False) -> int:
    """Total fvcore "flops" (multiply-adds) of ``model(input)``, natten ops included.

    Args:
        model: a ``torch.nn.Module``.
        input: its input tensor, or a tuple of positional inputs.
        disable_warnings: silence fvcore's warnings about unsupported ops and uncalled modules.
    """
    flop_ctr = add_natten_handle(FlopCountAnalysis(model, input))
    if disable_warnings:
        flop_ctr = flop_ctr.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flop_ctr.total()
