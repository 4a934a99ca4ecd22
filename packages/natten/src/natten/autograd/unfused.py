"""Autograd for the unfused ops (heads-first).

The four kernels are closed under differentiation (docs/internals.md), so every backward below is
written with the differentiable Functions of this file: double backward and gradgradcheck work,
and the forward-mode rules (``jvp``) reuse the same kernels.
"""

from __future__ import annotations

import torch

from natten.autograd._tracing import untraced

_ops = torch.ops.natten


# ``params`` below is ``(kernel_size, dilation, stride, is_causal, config)``: the ops' five trailing arguments,
# ``config`` choosing the device kernel's variant (natten.functional takes it from the chosen backend).


def _keep(ctx, inputs, saved, materialize_grads=True) -> None:
    """setup_context: save ``saved`` for backward and keep ``params``, the inputs after the tensors."""
    ctx.save_for_backward(*saved)
    ctx.params = tuple(inputs[-5:])
    if not materialize_grads:  # backward tells an unused output (None) from a zero gradient
        ctx.set_materialize_grads(False)


def _zero_invalid(attn: torch.Tensor, params) -> torch.Tensor:
    """qk used as a linear map: invalid (causal) slots carry 0 instead of -inf."""
    if any(params[3]):
        return attn.masked_fill(torch.isneginf(attn), 0.0)
    return attn


def _total(*terms):
    """The sum of the terms that are not None, left to right (None if all are): product-rule parts."""
    present = [t for t in terms if t is not None]
    return sum(present[1:], present[0]) if present else None


def qk(q, k, rpb, params, forward_ad=False):
    fn = NeighborhoodQKForwardAD if forward_ad else NeighborhoodQK
    return fn.apply(q, k, rpb, *params)


def qk_linear(q, k, params, rpb=None):
    return _zero_invalid(qk(q, k, rpb, params), params)


def av(attn, v, params, forward_ad=False):
    fn = NeighborhoodAVForwardAD if forward_ad else NeighborhoodAV
    return fn.apply(attn, v, *params)


def inverse_av(attn, x, params):
    """out_j = sum over (query i, slot t) whose key is j of attn[i, t] * x_i (the scatter of av)."""
    return NeighborhoodAVBackward.apply(x, attn, x, *params)[1]


class NeighborhoodQK(torch.autograd.Function):
    """attn[i, t] = q_i . k_{n(i, t)} (+ rpb); -inf on invalid slots."""

    @staticmethod
    def forward(q, k, rpb, kernel_size, dilation, stride, is_causal, config):
        return untraced(_ops.na_qk_forward, q, k, rpb, kernel_size, dilation, stride, is_causal, config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _keep(ctx, inputs, inputs[:3])

    @staticmethod
    def backward(ctx, grad_attn):
        q, k, rpb = ctx.saved_tensors
        dq, dk, drpb = NeighborhoodQKBackward.apply(grad_attn, q, k, rpb, *ctx.params)
        return dq, dk, (drpb if rpb is not None else None), None, None, None, None, None


class NeighborhoodQKBackward(torch.autograd.Function):
    """(grad_attn, q, k, rpb) -> (dq, dk, drpb)."""

    @staticmethod
    def forward(grad_attn, q, k, rpb, kernel_size, dilation, stride, is_causal, config):
        return untraced(_ops.na_qk_backward, grad_attn, q, k, rpb, kernel_size, dilation, stride, is_causal, config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _keep(ctx, inputs, inputs[:3], materialize_grads=False)
        ctx.has_rpb = inputs[3] is not None

    @staticmethod
    def backward(ctx, g_dq, g_dk, g_drpb):
        grad_attn, q, k = ctx.saved_tensors
        p = ctx.params
        d_q = d_k = None
        terms = []
        if g_dq is not None:
            terms.append(qk_linear(g_dq, k, p))
            d_k = inverse_av(grad_attn, g_dq, p)
        if g_dk is not None:
            terms.append(qk_linear(q, g_dk, p))
            d_q = av(grad_attn, g_dk, p)
        if ctx.has_rpb and g_drpb is not None:
            terms.append(qk_linear(torch.zeros_like(q), k, p, rpb=g_drpb))
        return _total(*terms), d_q, d_k, None, None, None, None, None, None


class NeighborhoodAV(torch.autograd.Function):
    """out_i = sum_t attn[i, t] v_{n(i, t)} over valid slots."""

    @staticmethod
    def forward(attn, v, kernel_size, dilation, stride, is_causal, config):
        return untraced(_ops.na_av_forward, attn, v, kernel_size, dilation, stride, is_causal, config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _keep(ctx, inputs, inputs[:2])

    @staticmethod
    def backward(ctx, grad_out):
        attn, v = ctx.saved_tensors
        d_attn, d_v = NeighborhoodAVBackward.apply(grad_out, attn, v, *ctx.params)
        return d_attn, d_v, None, None, None, None, None


class NeighborhoodAVBackward(torch.autograd.Function):
    """(grad_out, attn, v) -> (grad_attn, dv)."""

    @staticmethod
    def forward(grad_out, attn, v, kernel_size, dilation, stride, is_causal, config):
        return untraced(_ops.na_av_backward, grad_out, attn, v, kernel_size, dilation, stride, is_causal, config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _keep(ctx, inputs, inputs[:3], materialize_grads=False)

    @staticmethod
    def backward(ctx, g_grad_attn, g_dv):
        grad_out, attn, v = ctx.saved_tensors
        p = ctx.params
        from_attn = from_v = d_attn = d_v = None
        if g_grad_attn is not None:
            from_attn = av(g_grad_attn, v, p)
            d_v = inverse_av(g_grad_attn, grad_out, p)
        if g_dv is not None:
            from_v = av(attn, g_dv, p)
            d_attn = qk_linear(grad_out, g_dv, p)
        return _total(from_attn, from_v), d_attn, d_v, None, None, None, None, None


# Forward-mode AD. Separate classes because torch.compile cannot trace a Function that defines jvp;
# functional picks these only when a dual tensor is present.


class NeighborhoodQKForwardAD(NeighborhoodQK):
    @staticmethod
    def setup_context(ctx, inputs, output):
        NeighborhoodQK.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:3])

    @staticmethod
    def jvp(ctx, tq, tk, trpb, *_):
        q, k, _rpb = ctx.saved_tensors
        p = ctx.params
        return _total(
            None if tq is None else qk_linear(tq, k, p),
            None if tk is None else qk_linear(q, tk, p),
            # the bias alone, gathered into slots
            None if trpb is None else _ops.na_qk_forward(torch.zeros_like(q), k, trpb, *p),
        )


class NeighborhoodAVForwardAD(NeighborhoodAV):
    @staticmethod
    def setup_context(ctx, inputs, output):
        NeighborhoodAV.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:2])

    @staticmethod
    def jvp(ctx, t_attn, t_v, *_):
        attn, v = ctx.saved_tensors
        return _total(
            None if t_attn is None else av(t_attn, v, ctx.params),
            None if t_v is None else av(attn, t_v, ctx.params),
        )
