"""Autograd for the fused ops: one Function around ``natten::na_fused_forward/backward`` (first order,
in the functorch style so that ``torch.func`` transforms work), its variant with a forward-mode rule
(``jvp``, computed from the unfused ops), and the backward as a Function that refuses a second
derivative."""

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
    a fused kernel, so a second derivative through it raises (use the unfused ops for higher-order
    derivatives). Written in the functorch style (``forward`` without ctx, ``setup_context``), so the
    first-order ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``; ``vmap`` through the ops'
    per-sample vmap rules) work on it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(*inputs):
        # the op's arguments (config and query_offset: the forward's), then backward_configs and the
        # backend that runs them
        *op_args, _, backend = inputs
        return untraced(backend.op("na_fused_forward"), *op_args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        query_offset, backward_configs, backend = inputs[12:]
        ctx.save_for_backward(*inputs[:6], *output)  # q, k, v, rpb, additional k/v; out, lse
        ctx.params = inputs[6:11]  # kernel_size, dilation, stride, is_causal, scale
        ctx.query_offset = query_offset
        ctx.backward_configs = backward_configs
        ctx.backward_op = backend.op("na_fused_backward")
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v, rpb, add_k, add_v, out, lse = ctx.saved_tensors
        if grad_out is None:  # only lse was used downstream
            grad_out = torch.zeros_like(out)
        grad_out = grad_out.contiguous()
        args = (grad_out, q, k, v, out, lse, grad_lse, rpb, add_k, add_v, *ctx.params)
        op = ctx.backward_op
        config = _backward_config(op, ctx.backward_configs, args)
        if torch.is_grad_enabled():
            # create_graph=True or a torch.func transform: the gradients are first-order exact, and their
            # graph refuses a second derivative (FusedNeighborhoodAttentionBackward.backward).
            op_args = _OpArgs(op, (*args[10:], config, ctx.query_offset))
            grads = FusedNeighborhoodAttentionBackward.apply(*args[:10], op_args)
        else:
            grads = op(*args, config, ctx.query_offset)
        dq, dk, dv, drpb, dadd_k, dadd_v = grads
        return (
            dq,
            dk,
            dv,
            drpb if rpb is not None else None,
            dadd_k if add_k is not None else None,
            dadd_v if add_v is not None else None,
            *(None,) * 9,
        )


def _backward_config(op, configs, args) -> list[int]:
    """The backward config: the only candidate, or the autotuner's pick (never under torch.func
    transforms, whose wrapped tensors would be timed instead of the kernels)."""
    config = list(configs[0])
    if len(configs) > 1 and not torch._C._are_functorch_transforms_active():
        from natten import autotuner, context

        _, q, k, v, _, _, grad_lse, rpb, add_k, add_v, *params = args
        steps = context.get_autotuner_steps()
        key = ("backward", str(op), grad_lse is not None, *problem_key((q, k, v, rpb, add_k, add_v), params, configs))

        def run(c):
            return op(*args, list(c))

        config = autotuner.tune(key, configs, run, q.device, steps["warmup"][1], steps["steps"][1])
    return config


class _OpArgs:
    """The backward op and its non-tensor arguments as one opaque pytree leaf: functorch's generated vmap
    rule pairs tangents with flattened inputs, which list arguments (kernel_size, ...) would misalign."""

    def __init__(self, op, op_args: tuple):
        self.op = op
        self.op_args = op_args


class FusedNeighborhoodAttentionBackward(torch.autograd.Function):
    """The fused backward as a node of a graph (``create_graph=True``, torch.func transforms): it computes
    the first-order gradients and refuses to be differentiated itself (reverse or forward mode)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_out, q, k, v, out, lse, grad_lse, rpb, add_k, add_v, op_args):
        return untraced(op_args.op, grad_out, q, k, v, out, lse, grad_lse, rpb, add_k, add_v, *op_args.op_args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_forward()  # nothing to save; under vmap (jacfwd of jacrev) the jvp below must be reached

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_SECOND_ORDER)

    @staticmethod
    def jvp(ctx, *tangents):  # forward-over-reverse (torch.func.hessian, jacfwd(jacrev(...)))
        raise RuntimeError(_SECOND_ORDER)


_SECOND_ORDER = (
    "fused neighborhood attention supports first-order gradients only (its backward is a fused kernel "
    "without a derivative); for double backward, gradgradcheck or Hessians use the unfused ops "
    "(natten.functional.na*d_qk/na*d_av, or natten.use_fused_na(False) for the Modules)"
)


class FusedNeighborhoodAttentionForwardAD(FusedNeighborhoodAttention):
    """FusedNeighborhoodAttention with forward-mode AD (``jvp``). A separate class because torch.compile
    cannot trace a Function that defines jvp; natten.functional picks it only when a dual tensor or a
    torch.func transform is present."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        FusedNeighborhoodAttention.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:6], *output)

    @staticmethod
    def jvp(ctx, tq, tk, tv, trpb, tadd_k, tadd_v, *_):
        q, k, v, rpb, add_k, add_v, out, lse = ctx.saved_tensors
        return fused_jvp((q, k, v, rpb, add_k, add_v), (tq, tk, tv, trpb, tadd_k, tadd_v), out, lse, ctx.params)


def fused_jvp(primals, tangents, out, lse, params):
    """Tangents ``(d out, d lse)`` of the fused op, from the unfused ops.

    With logits ``S`` (slot logits ``scale * q.k + rpb`` and additional logits ``scale * q.k_add``),
    ``P = exp(S - lse)`` and ``dS = scale * (dq.k + q.dk) + drpb`` (same for the additional keys):
    ``d lse = sum(P * dS)`` and ``d out = sum((P * (dS - d lse)) v) + sum(P dv)``, i.e.
    ``dP v + P dv`` with ``dP = P * (dS - sum(P * dS))``. Computed heads-first in lse's dtype (float32,
    float64 for float64 inputs), with key/value heads repeated for GQA; materializes the
    ``[batch, heads, *spatial, prod(kernel_size)]`` weights, which forward-mode AD can afford.
    """
    q, k, v, rpb, add_k, add_v = primals
    tq, tk, tv, trpb, tadd_k, tadd_v = tangents
    kernel_size, dilation, stride, is_causal, scale = params
    unfused = (kernel_size, dilation, stride, is_causal, [])
    acc, heads = lse.dtype, q.shape[-2]

    def heads_first(x):  # [B, *S, Hx, E] -> [B, H, *S, E] in acc, kv heads repeated
        if x is None:
            return None
        if x.shape[-2] != heads:
            x = x.repeat_interleave(heads // x.shape[-2], dim=-2)
        return x.to(acc).movedim(-2, 1)

    # Heads-first: [B, H, *S, E]; additional keys/values [B, N_add, Hkv, E] -> [B, H, N_add, E].
    qh, kh, vh, tqh, tkh, tvh, akh, avh, takh, tavh = (
        heads_first(x) for x in (q, k, v, tq, tk, tv, add_k, add_v, tadd_k, tadd_v)
    )
    invalid = None
    if any(is_causal):  # causal slots past the query: -inf in the qk op's output
        invalid = torch.isneginf(_ops.na_qk_forward(torch.zeros_like(qh), torch.zeros_like(qh), None, *unfused))

    def slot_logits(a, b, bias=None):  # a.b (+ bias) per slot, 0 on invalid slots (a linear map)
        s = _ops.na_qk_forward(a, b, bias, *unfused)
        return s if invalid is None else s.masked_fill(invalid, 0.0)

    lse_h = lse.movedim(-1, 1).unsqueeze(-1)  # [B, H, *S, 1]
    p = (_ops.na_qk_forward(qh * scale, kh, rpb, *unfused) - lse_h).exp()  # exp(-inf) = 0 on invalid slots
    ds = torch.zeros_like(p)
    if tqh is not None:
        ds = ds + slot_logits(tqh * scale, kh)
    if tkh is not None:
        ds = ds + slot_logits(qh * scale, tkh)
    if trpb is not None:
        ds = ds + slot_logits(torch.zeros_like(qh), kh, trpb)
    t_lse = (p * ds).sum(-1)  # [B, H, *S]
    if akh is not None:  # every query attends every additional token: dense products over [N, N_add]
        qf, lse_f = qh.flatten(2, -2), lse_h.flatten(2, -2)  # [B, H, N, D], [B, H, N, 1]
        p_add = (scale * qf @ akh.transpose(-1, -2) - lse_f).exp()
        ds_add = torch.zeros_like(p_add)
        if tqh is not None:
            ds_add = ds_add + scale * tqh.flatten(2, -2) @ akh.transpose(-1, -2)
        if takh is not None:
            ds_add = ds_add + scale * qf @ takh.transpose(-1, -2)
        t_lse = t_lse + (p_add * ds_add).sum(-1).reshape(t_lse.shape)
    t_out = _ops.na_av_forward(p * (ds - t_lse.unsqueeze(-1)), vh, *unfused)
    if tvh is not None:
        t_out = t_out + _ops.na_av_forward(p, tvh, *unfused)
    if akh is not None:
        extra = (p_add * (ds_add - t_lse.flatten(2).unsqueeze(-1))) @ avh
        if tavh is not None:
            extra = extra + p_add @ tavh
        t_out = t_out + extra.reshape(t_out.shape)
    return t_out.movedim(1, -2).to(out.dtype), t_lse.movedim(1, -1)
