"""Additional keys/values for fused backends that do not fuse them: one exact merge by logsumexp.

Every query attends its neighborhood and ``N_add`` extra tokens (no mask, no bias; docs/semantics.md).
A backend computes the neighborhood part (output and LSE in float32, or float64 for float64 inputs);
:func:`merge` adds the extra tokens by dense matmuls in that precision over ``N_add`` (memory linear
in tokens):
``lse = logaddexp(lse_nb, lse_add)``, ``out = out_nb * exp(lse_nb - lse) + out_add * exp(lse_add - lse)``.
The backward runs on the merged LSE, so a backend's own gradients are already right for the
neighborhood keys; :func:`backward` adds the extra tokens' share of dq and their own gradients.

Layouts are the fused ops': heads-last ``q [B, *S, Hq, D]``, extra tokens ``[B, N_add, Hkv, D]``;
query head ``h`` reads key/value head ``h // (Hq // Hkv)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def present(additional_keys: Tensor | None) -> bool:
    return additional_keys is not None and additional_keys.numel() > 0


def _acc(q: Tensor) -> torch.dtype:
    """The merge's arithmetic: float32, float64 for float64 inputs."""
    return torch.promote_types(q.dtype, torch.float32)


def _logits(q: Tensor, add_k: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``q`` in the merge's precision as ``[B, N, Hkv, G, D]`` and its logits against the extra keys
    ``[B, N, Hkv, G, N_add]``."""
    b, hq, d, hkv = q.shape[0], q.shape[-2], q.shape[-1], add_k.shape[-2]
    qf = q.reshape(b, -1, hkv, hq // hkv, d).to(_acc(q))
    return qf, torch.einsum("bnhgd,bmhd->bnhgm", qf, add_k.to(qf.dtype)) * scale


def merge(out: Tensor, lse: Tensor, q: Tensor, add_k: Tensor, add_v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of the neighborhood (``out [B, *S, Hq, Dv]``, ``lse`` float32; float64 for float64
    inputs) merged with the extra tokens; the output in ``q``'s dtype."""
    b, hkv, dv = q.shape[0], add_k.shape[-2], add_v.shape[-1]
    g = q.shape[-2] // hkv
    _qf, logits = _logits(q, add_k, scale)
    lse_a = torch.logsumexp(logits, dim=-1)
    out_a = torch.einsum("bnhgm,bmhd->bnhgd", torch.exp(logits - lse_a[..., None]), add_v.to(logits.dtype))
    lse_n = lse.reshape(b, -1, hkv, g)
    lse_t = torch.logaddexp(lse_n, lse_a)
    o = (
        out.reshape(b, -1, hkv, g, dv) * torch.exp(lse_n - lse_t)[..., None]
        + out_a * torch.exp(lse_a - lse_t)[..., None]
    )
    return o.reshape(out.shape).to(q.dtype), lse_t.reshape(lse.shape)


def backward(
    grad_out: Tensor, q: Tensor, lse: Tensor, delta: Tensor, dq: Tensor, add_k: Tensor, add_v: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, d_additional_keys, d_additional_values)``: the backend's ``dq`` (float32) plus the extra
    tokens' share, from the merged ``lse`` and ``delta = rowsum(dO * O) - dLSE``."""
    b, hkv, d, dv = q.shape[0], add_k.shape[-2], q.shape[-1], add_v.shape[-1]
    g = q.shape[-2] // hkv
    qf, logits = _logits(q, add_k, scale)
    p = torch.exp(logits - lse.reshape(b, -1, hkv, g)[..., None])
    dof = grad_out.reshape(b, -1, hkv, g, dv).to(qf.dtype)
    dp = torch.einsum("bnhgd,bmhd->bnhgm", dof, add_v.to(qf.dtype))
    ds = p * (dp - delta.reshape(b, -1, hkv, g)[..., None])
    dq = dq.reshape(b, -1, hkv, g, d) + torch.einsum("bnhgm,bmhd->bnhgd", ds, add_k.to(qf.dtype)) * scale
    dadd_k = (torch.einsum("bnhgm,bnhgd->bmhd", ds, qf) * scale).to(add_k.dtype)
    dadd_v = torch.einsum("bnhgm,bnhgd->bmhd", p, dof).to(add_v.dtype)
    return dq.reshape(q.shape).to(q.dtype), dadd_k, dadd_v
