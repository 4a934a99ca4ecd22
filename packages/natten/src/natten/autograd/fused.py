"""Autograd for the fused ops: one Function around ``natten::na_fused_forward/backward``."""

from __future__ import annotations

import torch

from natten.autograd._tracing import untraced

_ops = torch.ops.natten


class FusedNeighborhoodAttention(torch.autograd.Function):
    """(q, k, v, rpb, additional_keys, additional_values) -> (out, lse), heads-last.

    First-order only: the backward is a fused kernel, so double backward raises (use the unfused
    ops for higher-order derivatives).
    """

    @staticmethod
    def forward(q, k, v, rpb, additional_keys, additional_values, kernel_size, dilation, stride, is_causal, scale):
        return untraced(
            _ops.na_fused_forward,
            q,
            k,
            v,
            rpb,
            additional_keys,
            additional_values,
            kernel_size,
            dilation,
            stride,
            is_causal,
            scale,
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, rpb, add_k, add_v, kernel_size, dilation, stride, is_causal, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, rpb, add_k, add_v, out, lse)
        ctx.params = (kernel_size, dilation, stride, is_causal, scale)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        if torch.is_grad_enabled():  # create_graph=True: the fused backward has no derivative of its own
            raise RuntimeError(
                "fused neighborhood attention supports first-order gradients only; for double backward "
                "use the unfused ops (natten.functional.na*d_qk/na*d_av, or natten.use_fused_na(False))"
            )
        q, k, v, rpb, add_k, add_v, out, lse = ctx.saved_tensors
        if grad_out is None:  # only lse was used downstream
            grad_out = torch.zeros_like(out)
        dq, dk, dv, drpb, dadd_k, dadd_v = _ops.na_fused_backward(
            grad_out.contiguous(), q, k, v, out, lse, grad_lse, rpb, add_k, add_v, *ctx.params
        )
        return (
            dq,
            dk,
            dv,
            drpb if rpb is not None else None,
            dadd_k if add_k is not None else None,
            dadd_v if add_v is not None else None,
            None,
            None,
            None,
            None,
            None,
        )
