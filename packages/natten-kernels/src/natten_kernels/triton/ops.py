"""Launchers for the Triton kernels: the CUDA implementations of ``natten::na_fused_forward`` and
``natten::na_fused_backward`` (same arguments as the ops, ``config`` last; see docs/internals.md).

They also run under ``TRITON_INTERPRET=1`` on CPU tensors, which is how CI tests them.

``config`` (forward and backward): ``[block_q, block_k, num_warps, num_stages]``; ``[]`` picks
:func:`natten_kernels.triton.tiling.default_config`. Block sizes are powers of two >= 16; each block
becomes a box over the rank-3 view (:func:`natten_kernels.triton.tiling.box`).

Additional keys/values are merged exactly through the logsumexp: the neighborhood part comes from the
kernel (output in float32 and its LSE), the additional part from dense float32 matmuls over the
``N_add`` extra tokens (memory linear in tokens), and ``out = sum_i out_i * exp(lse_i - lse)``.
The backward uses the final LSE, so the kernels' gradients are already the right ones for the
neighborhood keys; the additional keys' gradients come from the same dense matmuls.
"""

from __future__ import annotations

import torch
import triton

from natten_kernels.triton import kernels as K
from natten_kernels.triton.tiling import box, default_config

LOG2E = 1.4426950408889634


def _pad3(values, fill):
    values = list(values)
    return [fill] * (3 - len(values)) + values


def _as3(x: torch.Tensor, rank: int) -> torch.Tensor:
    """``[B, *S, H, D]`` -> ``[B, S0, S1, S2, H, D]`` view (unit leading axes); last dim contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    shape = list(x.shape)
    return x.reshape(shape[0], *([1] * (3 - rank)), *shape[1:])


def _as3_lse(x: torch.Tensor, rank: int) -> torch.Tensor:
    shape = list(x.shape)
    return x.reshape(shape[0], *([1] * (3 - rank)), *shape[1:])


def _strides5(x: torch.Tensor):
    return tuple(x.stride(i) for i in range(5))


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _geometry(q3, kernel_size, dilation, stride, is_causal):
    ks = _pad3(kernel_size, 1)
    dl = _pad3(dilation, 1)
    st = _pad3(stride, 1)
    cz = _pad3(is_causal, False)
    L = list(q3.shape[1:4])
    nmax = [-(-L[a] // dl[a]) for a in range(3)]
    return ks, dl, st, [bool(c) for c in cz], L, nmax


def _parse(config, head_dim, dtype, backward=False):
    cfg = list(config) if config else default_config(head_dim, torch.finfo(dtype).bits // 8, backward)
    if len(cfg) != 4:
        raise ValueError(f"triton config must be [block_q, block_k, num_warps, num_stages], got {list(config)}")
    bq, bk, warps, stages = (int(c) for c in cfg)
    for name, v in (("block_q", bq), ("block_k", bk)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"triton config {name} must be a power of two >= 16, got {v}")
    return bq, bk, warps, stages


def tile_shapes(kernel_size, dilation, stride, spatial, block_q, block_k):
    """Query and key boxes over the rank-3 view for a problem (exposed for benchmarks / tests)."""
    ks = _pad3(kernel_size, 1)
    dl = _pad3(dilation, 1)
    st = _pad3(stride, 1)
    L = _pad3(spatial, 1)
    nmax = tuple(-(-L[a] // dl[a]) for a in range(3))
    qbox = box(block_q, nmax, tuple(ks), align=tuple(st) if any(s > 1 for s in st) else None)
    kbox = box(block_k, nmax, tuple(ks), align=tuple(ks))
    return qbox, kbox


def _rpb3(rpb, h, rank):
    if rpb is None:
        return None, (0, 0, 0, 0)
    r = rpb.to(torch.float32).contiguous()
    r = r.reshape(h, *([1] * (3 - rank)), *r.shape[1:])
    return r, tuple(r.stride(i) for i in range(4))


def _dim_block(d):
    return max(16, triton.next_power_of_2(d))


# ----------------------------------------------------------------------------- additional KV (dense)


def _add_logits(q, add_k, scale, hkv):
    b, hq, d = q.shape[0], q.shape[-2], q.shape[-1]
    qf = q.reshape(b, -1, hkv, hq // hkv, d).float()
    return qf, torch.einsum("bnhgd,bmhd->bnhgm", qf, add_k.float()) * scale


def _additional_forward(q, add_k, add_v, scale):
    hkv = add_k.shape[-2]
    _qf, logits = _add_logits(q, add_k, scale, hkv)
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.einsum("bnhgm,bmhd->bnhgd", torch.exp(logits - lse[..., None]), add_v.float())
    return out, lse  # [B, N, Hkv, G, Dv], [B, N, Hkv, G]


# ----------------------------------------------------------------------------- forward


def na_fused_forward(
    q, k, v, rpb, additional_keys, additional_values, kernel_size, dilation, stride, is_causal, scale, config=()
):
    """CUDA (or interpreted) implementation of ``natten::na_fused_forward``; returns ``(out, lse)``."""
    rank = q.dim() - 3
    hq, hkv, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    has_add = additional_keys is not None and additional_keys.numel() > 0
    out_dtype = torch.float32 if has_add else q.dtype
    out = torch.empty((*q.shape[:-1], dv), dtype=out_dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    if q.numel() > 0 and out.numel() > 0:
        _launch_forward(
            q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, float(scale), config
        )
    if has_add:
        b = q.shape[0]
        out_a, lse_a = _additional_forward(q, additional_keys, additional_values, float(scale))
        g = hq // hkv
        lse_n = lse.reshape(b, -1, hkv, g)
        lse_t = torch.logaddexp(lse_n, lse_a)
        o = (
            out.reshape(b, -1, hkv, g, dv) * torch.exp(lse_n - lse_t)[..., None]
            + out_a * torch.exp(lse_a - lse_t)[..., None]
        )
        out = o.reshape(out.shape).to(q.dtype)
        lse = lse_t.reshape(lse.shape)
    return out, lse


def _launch_forward(
    q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config
):
    q3, k3, v3 = _as3(q, rank), _as3(k, rank), _as3(v, rank)
    o3, l3 = _as3(out, rank), _as3_lse(lse, rank)
    ks, dl, st, cz, L, nmax = _geometry(q3, kernel_size, dilation, stride, is_causal)
    bq, bk, warps, stages = _parse(config, max(d, dv), q.dtype)
    (t0, t1, t2), (kb0, kb1, kb2) = tile_shapes(ks, dl, st, L, bq, bk)
    nt = [-(-nmax[0] // t0), -(-nmax[1] // t1), -(-nmax[2] // t2)]
    G = dl[0] * dl[1] * dl[2]
    r3, rs = _rpb3(rpb, hq, rank)
    grid = (nt[0] * nt[1] * nt[2] * G, hq, q.shape[0])
    K.na_fwd_kernel[grid](
        q3,
        k3,
        v3,
        o3,
        l3,
        r3 if r3 is not None else l3,
        *_strides5(q3),
        *_strides5(k3),
        *_strides5(v3),
        *_strides5(o3),
        *_strides5(l3),
        *rs,
        *L,
        *ks,
        *dl,
        *st,
        nt[1],
        nt[2],
        G,
        hq // hkv,
        d,
        dv,
        scale * LOG2E,
        C0=cz[0],
        C1=cz[1],
        C2=cz[2],
        T0=t0,
        T1=t1,
        T2=t2,
        KB0=kb0,
        KB1=kb1,
        KB2=kb2,
        BLOCK_D=_dim_block(d),
        BLOCK_DV=_dim_block(dv),
        HAS_RPB=r3 is not None,
        PREC=_precision(q.dtype),
        num_warps=warps,
        num_stages=stages,
    )


# ----------------------------------------------------------------------------- backward


def na_fused_backward(
    grad_out,
    q,
    k,
    v,
    out,
    lse,
    grad_lse,
    rpb,
    additional_keys,
    additional_values,
    kernel_size,
    dilation,
    stride,
    is_causal,
    scale,
    config=(),
):
    """CUDA (or interpreted) implementation of ``natten::na_fused_backward``.

    Deterministic: dq per query tile, dk/dv per key tile over its inverse neighborhood, drpb per
    (head, relative position), each written once by one program with a fixed reduction order.
    """
    rank = q.dim() - 3
    hq, hkv, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = float(scale)
    has_add = additional_keys is not None and additional_keys.numel() > 0
    grad_out = grad_out.contiguous()
    lse = lse.float().contiguous()
    delta = (grad_out.float() * out.float()).sum(-1)
    if grad_lse is not None:
        delta = delta - grad_lse.float()
    delta = delta.contiguous()
    dq = torch.empty(q.shape, dtype=torch.float32 if has_add else q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    drpb = q.new_empty(0) if rpb is None else torch.empty(rpb.shape, dtype=torch.float32, device=q.device)
    if q.numel() > 0 and dvv.numel() > 0:
        _launch_backward(
            grad_out,
            q,
            k,
            v,
            lse,
            delta,
            rpb,
            dq,
            dk,
            dvv,
            drpb,
            rank,
            hq,
            hkv,
            d,
            dv,
            kernel_size,
            dilation,
            stride,
            is_causal,
            scale,
            config,
        )
    elif q.numel() > 0 or k.numel() > 0:
        dq.zero_(), dk.zero_(), dvv.zero_()
        if rpb is not None:
            drpb.zero_()
    dadd_k = q.new_empty(0)
    dadd_v = q.new_empty(0)
    if has_add:
        b = q.shape[0]
        g = hq // hkv
        qf, logits = _add_logits(q, additional_keys, scale, hkv)
        p = torch.exp(logits - lse.reshape(b, -1, hkv, g)[..., None])
        dof = grad_out.reshape(b, -1, hkv, g, dv).float()
        dp = torch.einsum("bnhgd,bmhd->bnhgm", dof, additional_values.float())
        ds = p * (dp - delta.reshape(b, -1, hkv, g)[..., None])
        dq = dq.reshape(b, -1, hkv, g, d) + torch.einsum("bnhgm,bmhd->bnhgd", ds, additional_keys.float()) * scale
        dq = dq.reshape(q.shape).to(q.dtype)
        dadd_k = (torch.einsum("bnhgm,bnhgd->bmhd", ds, qf) * scale).to(additional_keys.dtype)
        dadd_v = torch.einsum("bnhgm,bnhgd->bmhd", p, dof).to(additional_values.dtype)
    if rpb is not None:
        drpb = drpb.to(rpb.dtype)
    return dq, dk, dvv, drpb, dadd_k, dadd_v


def _launch_backward(
    do,
    q,
    k,
    v,
    lse,
    delta,
    rpb,
    dq,
    dk,
    dv,
    drpb,
    rank,
    hq,
    hkv,
    d,
    dvd,
    kernel_size,
    dilation,
    stride,
    is_causal,
    scale,
    config,
):
    q3, k3, v3, do3 = _as3(q, rank), _as3(k, rank), _as3(v, rank), _as3(do, rank)
    dq3, dk3, dv3 = _as3(dq, rank), _as3(dk, rank), _as3(dv, rank)
    l3, de3 = _as3_lse(lse, rank), _as3_lse(delta, rank)
    ks, dl, st, cz, L, nmax = _geometry(q3, kernel_size, dilation, stride, is_causal)
    bq, bk, warps, stages = _parse(config, max(d, dvd), q.dtype, backward=True)
    (t0, t1, t2), (kb0, kb1, kb2) = tile_shapes(ks, dl, st, L, bq, bk)
    G = dl[0] * dl[1] * dl[2]
    r3, rs = _rpb3(rpb, hq, rank)
    common = dict(
        C0=cz[0],
        C1=cz[1],
        C2=cz[2],
        T0=t0,
        T1=t1,
        T2=t2,
        KB0=kb0,
        KB1=kb1,
        KB2=kb2,
        BLOCK_D=_dim_block(d),
        BLOCK_DV=_dim_block(dvd),
        HAS_RPB=r3 is not None,
        PREC=_precision(q.dtype),
        num_warps=warps,
        num_stages=stages,
    )
    geo = (*L, *ks, *dl, *st)
    rp = r3 if r3 is not None else l3
    # dq: q and dq must share strides (dq is contiguous; make q3 contiguous too if it is not)
    if q3.stride() != dq3.stride():
        q3 = q3.contiguous()
    nt = [-(-nmax[0] // t0), -(-nmax[1] // t1), -(-nmax[2] // t2)]
    K.na_bwd_dq_kernel[(nt[0] * nt[1] * nt[2] * G, hq, q.shape[0])](
        q3,
        k3,
        v3,
        do3,
        l3,
        de3,
        dq3,
        rp,
        *_strides5(q3),
        *_strides5(k3),
        *_strides5(v3),
        *_strides5(do3),
        *_strides5(l3),
        *rs,
        *geo,
        nt[1],
        nt[2],
        G,
        hq // hkv,
        d,
        dvd,
        scale * LOG2E,
        scale,
        **common,
    )
    if k3.stride() != dk3.stride():
        k3 = k3.contiguous()
    if v3.stride() != dv3.stride():
        v3 = v3.contiguous()
    nk = [-(-nmax[0] // kb0), -(-nmax[1] // kb1), -(-nmax[2] // kb2)]
    logn = max(n.bit_length() for n in nmax) + 1
    K.na_bwd_dkdv_kernel[(nk[0] * nk[1] * nk[2] * G, hkv, q.shape[0])](
        q3,
        k3,
        v3,
        do3,
        l3,
        de3,
        dk3,
        dv3,
        rp,
        *_strides5(q3),
        *_strides5(k3),
        *_strides5(v3),
        *_strides5(do3),
        *_strides5(l3),
        *rs,
        *geo,
        nk[1],
        nk[2],
        G,
        hq // hkv,
        d,
        dvd,
        scale * LOG2E,
        scale,
        logn,
        **common,
    )
    if r3 is not None:
        nrel = drpb.numel() // hq
        K.na_bwd_drpb_kernel[(nrel, hq)](
            q3,
            k3,
            v3,
            do3,
            l3,
            de3,
            r3,
            drpb,
            *_strides5(q3),
            *_strides5(k3),
            *_strides5(v3),
            *_strides5(do3),
            *_strides5(l3),
            *rs,
            *geo,
            q.shape[0],
            hq // hkv,
            d,
            dvd,
            scale,
            BLOCK_T=64,
            BLOCK_D=_dim_block(d),
            BLOCK_DV=_dim_block(dvd),
            num_warps=4,
        )
