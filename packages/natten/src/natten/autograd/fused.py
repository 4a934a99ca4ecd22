"""Autograd for the fused ops: one Function around ``natten::na_fused_forward/backward``."""

from __future__ import annotations

import torch

from natten.autograd._tracing import untraced

_ops = torch.ops.natten


def problem_key(tensors, op_args, candidates) -> tuple:
    """What identifies a fused problem for the autotuner cache: what changes the kernels' speed.

    Shapes, strides, dtype and device of every tensor (``None`` for absent optional ones), the
    neighborhood parameters, the candidate configurations (they follow the context flags), and whether
    the scale is positive (the Triton kernels take another path for ``scale <= 0``), not its value.
    """
    *params, scale = op_args
    layout = tuple(None if t is None else (tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors)
    return (layout, *(tuple(p) for p in params), scale > 0, tuple(tuple(c) for c in candidates))


class FusedNeighborhoodAttention(torch.autograd.Function):
    """(q, k, v, rpb, additional_keys, additional_values) -> (out, lse), heads-last.

    ``forward_config`` goes to the forward kernel; ``backward_configs`` holds one backward config, or
    several for the autotuner to choose from at the first backward. First-order only: the backward is
    a fused kernel, so double backward raises (use the unfused ops for higher-order derivatives).
    """

    @staticmethod
    def forward(
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
        forward_config,
        backward_configs,
    ):
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
            forward_config,
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, rpb, add_k, add_v, kernel_size, dilation, stride, is_causal, scale, _, backward_configs = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, rpb, add_k, add_v, out, lse)
        ctx.params = (kernel_size, dilation, stride, is_causal, scale)
        ctx.backward_configs = backward_configs
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
        grad_out = grad_out.contiguous()

        def run(config):
            return _ops.na_fused_backward(
                grad_out, q, k, v, out, lse, grad_lse, rpb, add_k, add_v, *ctx.params, list(config)
            )

        configs = ctx.backward_configs
        config = list(configs[0])
        if len(configs) > 1:
            from natten import autotuner, context

            steps = context.get_autotuner_steps()
            key = ("backward", grad_lse is not None, *problem_key((q, k, v, rpb, add_k, add_v), ctx.params, configs))
            config = autotuner.tune(key, configs, run, q.device, steps["warmup"][1], steps["steps"][1])
        dq, dk, dv, drpb, dadd_k, dadd_v = run(config)
        return (
            dq,
            dk,
            dv,
            drpb if rpb is not None else None,
            dadd_k if add_k is not None else None,
            dadd_v if add_v is not None else None,
            *(None,) * 7,
        )
