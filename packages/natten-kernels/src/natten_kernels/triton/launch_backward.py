"""The backward launcher: the CUDA (and interpreted) implementation of ``natten::na_fused_backward``.

Deterministic by default: ``delta`` by one kernel, ``dq`` per query tile, ``dk``/``dv`` per key tile
over its inverse neighborhood, ``drpb`` per (head, relative position) (fused_backward.py); config
variant 1 (KV parallelism) folds dq into the dk/dv pass with float32 atomics. Additional keys/values
add their share through natten_kernels.additional_kv.
"""

from __future__ import annotations

import torch
import triton

from natten_kernels import additional_kv
from natten_kernels.ops.spec import bind
from natten_kernels.triton import tma
from natten_kernels.triton.configs import boxes, launch_params
from natten_kernels.triton.fused_backward import (
    na_bwd_delta_kernel,
    na_bwd_dkdv_kernel,
    na_bwd_dq_kernel,
    na_bwd_drpb_kernel,
)
from natten_kernels.triton.layout import (
    LOG2E,
    as3,
    as3_lse,
    box_pieces,
    dim_block,
    query_box,
    query_tiles,
    rel64,
    rpb3,
    strides5,
)
from natten_kernels.triton.tiling import pow2_at_least


def na_fused_backward(*args):
    """CUDA (or interpreted) implementation of ``natten::na_fused_backward``.

    Deterministic by default: dq per query tile, dk/dv per key tile over its inverse neighborhood,
    drpb per (head, relative position), each written once by one program with a fixed reduction
    order. Variant 1 of ``config`` (KV parallelism) folds dq into the dk/dv pass with atomics.
    """
    a = bind("na_fused_backward", args)
    grad_out, q, k, v, out, lse, grad_lse, rpb = a.grad_out, a.q, a.k, a.v, a.out, a.lse, a.grad_lse, a.rpb
    rank = q.dim() - 3
    hq, hkv, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = float(a.scale)
    has_add = additional_kv.present(a.additional_keys)
    grad_out = grad_out.contiguous()
    lse = lse.float().contiguous()
    delta = _delta(grad_out, out, grad_lse)
    dq = torch.empty(q.shape, dtype=torch.float32 if has_add else q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    drpb = q.new_empty(0) if rpb is None else torch.empty(rpb.shape, dtype=torch.float32, device=q.device)
    if q.numel() > 0 and dvv.numel() > 0:
        geometry = (a.kernel_size, a.dilation, a.stride, a.is_causal)
        _launch_backward(
            grad_out, q, k, v, lse, delta, rpb, dq, dk, dvv, drpb, rank, hq, hkv, d, dv, *geometry, scale, a.config,
            a.query_offset,
        )  # fmt: skip
    elif q.numel() > 0 or k.numel() > 0:
        dq.zero_(), dk.zero_(), dvv.zero_()
        if rpb is not None:
            drpb.zero_()
    dadd_k = q.new_empty(0)
    dadd_v = q.new_empty(0)
    if has_add:
        dq, dadd_k, dadd_v = additional_kv.backward(
            grad_out, q, lse, delta, dq, a.additional_keys, a.additional_values, scale
        )
    if rpb is not None:
        drpb = drpb.to(rpb.dtype)
    return dq, dk, dvv, drpb, dadd_k, dadd_v


def _delta(grad_out, out, grad_lse):
    """rowsum(dO * O) - dLSE in float32, shaped like the LSE."""
    dv = out.shape[-1]
    delta = torch.empty(out.shape[:-1], dtype=torch.float32, device=out.device)
    rows = delta.numel()
    if rows == 0:
        return delta
    if dv == 0:
        return delta.zero_() if grad_lse is None else delta.copy_(-grad_lse.float())
    glse = grad_lse.float().contiguous() if grad_lse is not None else delta
    block_dv = pow2_at_least(dv)
    block_r = max(1, 4096 // block_dv)
    na_bwd_delta_kernel[(triton.cdiv(rows, block_r),)](
        grad_out.contiguous(),
        out.contiguous(),
        glse,
        delta,
        rows,
        dv,
        HAS_GLSE=grad_lse is not None,
        BLOCK_R=block_r,
        BLOCK_DV=block_dv,
        num_warps=4,
    )
    return delta


def _dq_pass(q3, do3, l3, de3, dq3, k3, v3, rs, rp, geo, dq_cfg, cx, offset, rank, hq, hkv, scale):
    """One launch of the dq pass: the queries of ``q3`` (views of one piece of a box at ``offset`` of the
    key grid, or the whole grid without one), their tiles chosen for them."""
    dq_bq, dq_bk, dq_warps, dq_stages, dq_tma = dq_cfg
    ks, dl, st, L, _nmax, _cz = geo
    d, dvd = q3.shape[-1], v3.shape[-1]
    sub, qbox = query_box(q3, k3, offset, rank)
    tq, tk, dq_boxes = boxes(geo, dq_bq, dq_bk, queries=qbox if sub else None)
    wide = cx["REL64"] or rel64((q3, k3, v3, do3), (tq, tk), dl, dim_block(max(d, dvd)))
    want = bool(dq_tma) and not wide and tma.streamed_tiles_ok(dq_bq, dq_bk, d, dvd)
    k_arg, v_arg, loads = tma.operands(k3, v3, tk, d, dvd, dl, want)
    res_ok = loads == "host" and tma.resident_tiles_ok(tq, dq_bk, d, dvd)
    q_res, do_res, res = tma.operands(q3, do3, tq, d, dvd, dl, res_ok, device_ok=False)
    dq_cx = dict(cx, REL64=wide, num_warps=dq_warps, num_stages=dq_stages, TMA=loads == "device")
    dq_cx.update(TMA_HOST=loads == "host", RES_TMA=res == "host")
    nt, G = query_tiles(qbox, dl, tq)
    na_bwd_dq_kernel[(nt[0] * nt[1] * nt[2] * G, hq, q3.shape[0])](
        q_res,
        k_arg,
        v_arg,
        do_res,
        l3,
        de3,
        dq3,
        rp,
        *(strides5(x) for x in (q3, k3, v3, do3, l3)),
        rs,
        (tuple(L), tuple(ks), tuple(dl), tuple(st)),
        nt[1],
        nt[2],
        G,
        hq // hkv,
        scale * LOG2E,
        scale,
        qbox,
        SUB=sub,
        **dq_boxes,
        **dq_cx,
    )


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
    query_offset,
):
    q3, k3, v3, do3 = as3(q, rank), as3(k, rank), as3(v, rank), as3(do, rank)
    dk3, dv3 = as3(dk, rank), as3(dv, rank)
    l3, de3 = as3_lse(lse, rank), as3_lse(delta, rank)
    sub, qbox = query_box(q3, k3, query_offset, rank)
    geo, cfg, cx = launch_params(
        q, k3, rank, kernel_size, dilation, stride, is_causal, config, d, dvd, True, qbox if sub else None
    )
    (resident, streamed, _w, _s, kv_parallel), (dq_bq, dq_bk) = cfg[:5], cfg[5:7]
    ks, dl, st, L, nmax, _cz = geo
    # backward blocks are [resident, streamed]: the dk/dv pass keeps a key tile and streams queries;
    # the dq pass (its own config) keeps a query tile and streams keys
    queries = qbox if sub else None
    tq, tk, _ = boxes(geo, dq_bq, dq_bk, queries=queries)  # the whole box's dq tiles: REL64 below
    tq2, tk2, dkdv_boxes = boxes(geo, streamed, resident, search=False, queries=queries)
    G = dl[0] * dl[1] * dl[2]
    r3, rs = rpb3(rpb, hq, rank)
    sizes = (tuple(L), tuple(ks), tuple(dl), tuple(st))  # the kernels' GEO
    rp = r3 if r3 is not None else l3
    # KV-parallel: dq accumulates in float32 by atomics (in place when dq already is float32)
    dq_acc = (
        (dq if dq.dtype == torch.float32 else torch.empty(dq.shape, dtype=torch.float32, device=dq.device))
        if kv_parallel
        else dq
    )
    if q.stride() != dq_acc.stride():  # q and dq share strides in the kernels (dq is contiguous)
        q = q.contiguous()
        q3 = as3(q, rank)
    dq3 = as3(dq_acc, rank)
    cx["REL64"] = rel64((q3, k3, v3, do3), (tq, tk, tq2, tk2), dl, dim_block(max(d, dvd)))
    cx["HAS_RPB"] = r3 is not None
    cx["SCALE_FIRST"] = r3 is not None or scale <= 0  # else folded into the exp2's argument (needs > 0)
    if kv_parallel:
        dq_acc.zero_()
    else:
        # a box runs in the forward's pieces (launch_forward): its tiles then fit the stride blocks
        geometry = (kernel_size, dilation, stride, is_causal)
        pieces = box_pieces(q.shape[1:-2], query_offset, k.shape[1:-2], max(d, dvd), *geometry, config)
        if not pieces:  # no box: the tensors as given
            _dq_pass(q3, do3, l3, de3, dq3, k3, v3, rs, rp, geo, cfg[5:], cx, (), rank, hq, hkv, scale)
        for ix, offset in pieces:
            views = (as3(q[ix], rank), as3(do[ix], rank), as3_lse(lse[ix], rank), as3_lse(delta[ix], rank))
            _dq_pass(*views, as3(dq_acc[ix], rank), k3, v3, rs, rp, geo, cfg[5:], cx, offset, rank, hq, hkv, scale)
    if k3.stride() != dk3.stride():
        k3 = k3.contiguous()
    if v3.stride() != dv3.stride():
        v3 = v3.contiguous()
    strides = (*(strides5(x) for x in (q3, k3, v3, do3, l3)), rs)
    nk = [-(-nmax[a] // tk2[a]) for a in range(3)]
    logn = max(n.bit_length() for n in nmax) + 1
    want = not kv_parallel and tma.streamed_tiles_ok(resident, streamed, d, dvd)
    q_arg, do_arg, loads = tma.operands(q3, do3, tq2, d, dvd, dl, want, device_ok=False)
    res_ok = loads == "host" and tma.resident_tiles_ok(tk2, streamed, d, dvd)
    k_res, v_res, res = tma.operands(k3, v3, tk2, d, dvd, dl, res_ok, device_ok=False)
    na_bwd_dkdv_kernel[(nk[0] * nk[1] * nk[2] * G, hkv, q.shape[0])](
        q_arg,
        k_res,
        v_res,
        do_arg,
        l3,
        de3,
        dk3,
        dv3,
        dq3,
        rp,
        *strides,
        sizes,
        nk[1],
        nk[2],
        G,
        hq // hkv,
        scale * LOG2E,
        scale,
        logn,
        qbox,
        SUB=sub,
        DQ_ATOMIC=bool(kv_parallel),
        TMA_HOST=loads == "host",
        RES_TMA=res == "host",
        **dkdv_boxes,
        **cx,
    )
    if kv_parallel and dq_acc is not dq:
        dq.copy_(dq_acc)
    if r3 is not None:
        nrel = drpb.numel() // hq
        na_bwd_drpb_kernel[(nrel, hq)](
            q3,
            k3,
            v3,
            do3,
            l3,
            de3,
            r3,
            drpb,
            *strides,
            sizes,
            q.shape[0],
            hq // hkv,
            d,
            dvd,
            scale,
            qbox,
            SUB=sub,
            BLOCK_T=64,
            BLOCK_D=dim_block(d),
            BLOCK_DV=dim_block(dvd),
            num_warps=4,
        )
