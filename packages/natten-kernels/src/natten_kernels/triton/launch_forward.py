"""The forward launcher: the CUDA (and interpreted) implementation of ``natten::na_fused_forward``.

It resolves the config (configs.py), picks the tiles' loads (tma.py), and launches the box kernel
(fused_forward.py) or, where every window is its whole dilation group, the whole-group kernel
(fused_forward_groups.py), from a launch plan cached per problem. Additional keys/values are merged
by logsumexp (natten_kernels.additional_kv). Runs under ``TRITON_INTERPRET=1`` on CPU tensors (CI).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from natten_kernels import additional_kv
from natten_kernels.triton import tma
from natten_kernels.triton.configs import boxes, launch_params
from natten_kernels.triton.fused_forward import na_fwd_kernel
from natten_kernels.triton.fused_forward_groups import na_fwd_groups_kernel
from natten_kernels.triton.layout import (
    LOG2E,
    as3,
    as3_lse,
    box_pieces,
    dim_block,
    precision,
    query_box,
    query_tiles,
    rel64,
    rpb3,
    strides5,
)
from natten_kernels.triton.tiling import GROUP_VARIANT, pow2_at_least, whole_groups


def na_fused_forward(
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
    config=(),
    query_offset=(),
):
    """CUDA (or interpreted) implementation of ``natten::na_fused_forward``; returns ``(out, lse)``.
    ``query_offset``: q is the box of the key grid at that offset (only its queries are computed)."""
    rank = q.dim() - 3
    hq, hkv, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    has_add = additional_kv.present(additional_keys)
    out_dtype = torch.float32 if has_add else q.dtype
    out = torch.empty((*q.shape[:-1], dv), dtype=out_dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    if q.numel() > 0 and out.numel() > 0:
        geometry = (kernel_size, dilation, stride, is_causal)
        if not query_offset:  # no views: indexing costs host time that small problems feel
            _launch_forward(q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, *geometry, float(scale), config, ())
        else:
            pieces = box_pieces(q.shape[1:-2], query_offset, k.shape[1:-2], max(d, dv), *geometry, config)
            for box, offset in pieces:
                qp, op, lp = q[box], out[box], lse[box]
                _launch_forward(qp, k, v, rpb, op, lp, rank, hq, hkv, d, dv, *geometry, float(scale), config, offset)
    if has_add:
        out, lse = additional_kv.merge(out, lse, q, additional_keys, additional_values, float(scale))
    return out, lse


@dataclass
class ForwardPlan:
    """One forward launch but for the data pointers: the kernel, its grid, the host-built descriptor
    specs of ``(q, k, v, out, lse, rpb)`` (None: the tensor itself), the scalar arguments and the
    constexprs. ``persistent``: ``(items, SMs, programs per SM guessed)`` of a persistent grid, sized
    to one wave of the compiled kernel after its first launch (then None)."""

    kernel: object
    grid: tuple
    specs: tuple
    scalars: tuple
    constexprs: dict
    persistent: tuple | None = None


_FORWARD_PLANS: dict = {}  # launch plans of recent problems (a bounded FIFO; see _launch_forward)
_MAX_PLANS = 256
_PROGRAMS_PER_SM: list[int | None] = [None]  # set_programs_per_sm's override
# Experiment (perf notes v7): the box forward keeps non-finite values of v inside their queries'
# windows at the cost of one more product per key tile. Off: the kernels do not (docs/gpu.md).
NONFINITE_SAFE: list[bool] = [False]


def clear_plans() -> None:
    """Forget the cached launch plans (probes that change a launcher's choices between calls)."""
    _FORWARD_PLANS.clear()


def set_programs_per_sm(n: int | None) -> None:
    """Size persistent grids for ``n`` programs per SM instead of the compiled kernel's occupancy
    (None: measure it again); clears the plans. For probes of the whole-group forward's grid."""
    _PROGRAMS_PER_SM[0] = n
    clear_plans()


def _launch_forward(
    q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config, query_offset
):
    """Launch the forward from a plan cached per problem: everything but the data pointers follows
    from the key (shapes, strides, dtype, device, parameters, config, the TF32 switch, and 16-byte
    alignment, which TMA needs), so a repeated call skips the tiling and config choice."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))  # views below, same pointers
    aligned = q.is_cuda and ((q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15) == 0
    key = (
        rank,
        q.shape,
        q.stride(),
        k.shape,
        k.stride(),
        v.shape,
        v.stride(),
        out.stride(),  # a box's pieces write views of its output: same q, other output strides
        lse.stride(),
        q.dtype,
        q.device,
        None if rpb is None else rpb.shape,
        tuple(kernel_size),
        tuple(dilation),
        tuple(stride),
        tuple(is_causal),
        scale,
        tuple(config),
        tuple(query_offset),
        precision(q.dtype),
        aligned,
    )
    plan = _FORWARD_PLANS.get(key)
    if plan is None:
        geometry = (kernel_size, dilation, stride, is_causal)
        plan = _forward_plan(q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, *geometry, scale, config, query_offset)
        while len(_FORWARD_PLANS) >= _MAX_PLANS:
            _FORWARD_PLANS.pop(next(iter(_FORWARD_PLANS)), None)
        _FORWARD_PLANS[key] = plan
    r = lse if rpb is None else rpb.to(torch.float32).contiguous()
    tensors = (q, k, v, out, lse, r)
    args = [t if spec is None else tma.descriptor(t, spec) for t, spec in zip(tensors, plan.specs)]
    if plan.constexprs.get("TMA"):
        tma.ensure_allocator()
    compiled = plan.kernel[plan.grid](*args, *plan.scalars, **plan.constexprs)
    if plan.persistent is not None:  # one wave of the programs that fit, now that they are known
        items, sms, guess = plan.persistent
        per_sm = _PROGRAMS_PER_SM[0] or _programs_per_sm(compiled, plan.constexprs["num_warps"], guess)
        plan.grid, plan.persistent = (min(items, sms * per_sm),), None


def _forward_plan(
    q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config, query_offset
):
    """The :class:`ForwardPlan` of one forward launch; its tensors are views of the call's."""
    q3, k3, v3 = as3(q, rank), as3(k, rank), as3(v, rank)
    o3, l3 = as3(out, rank), as3_lse(lse, rank)
    sub, qbox = query_box(q3, k3, query_offset, rank)
    geo, (bq, bk, _w, _s, variant, _maxnreg), cx = launch_params(
        q, k3, rank, kernel_size, dilation, stride, is_causal, config, d, dv, False, qbox if sub else None
    )
    if variant == GROUP_VARIANT:
        if sub:
            raise ValueError(f"triton config variant {GROUP_VARIANT} (whole-group forward) takes no query_offset")
        return _groups_plan(q, q3, k3, v3, o3, l3, rpb, rank, hq, hkv, d, dv, geo, scale, cx)
    ks, dl, st, L, _nmax, _cz = geo
    tq, tk, box_cx = boxes(geo, bq, bk, queries=qbox if sub else None)
    wide = rel64((k3, v3), (tk,), dl, dim_block(max(d, dv)))
    want = bool(variant) and not wide and tma.streamed_tiles_ok(bq, bk, d, dv)
    k_spec, v_spec, loads = tma.specs(k3, v3, tk, d, dv, dl, want)
    q_ok = loads == "host" and tma.resident_tiles_ok(tq, bk, d, dv)
    q_spec = tma.descriptor_spec(q3, d, tq, dl) if q_ok else None
    nt, G = query_tiles(qbox, dl, tq)
    r3, rs = rpb3(rpb, hq, rank)
    grid = (nt[0] * nt[1] * nt[2] * G, hq, q.shape[0])
    scalars = (
        *(strides5(x) for x in (q3, k3, v3, o3, l3)),
        rs,
        (tuple(L), tuple(ks), tuple(dl), tuple(st)),
        nt[1],
        nt[2],
        G,
        hq // hkv,
        scale * LOG2E,
        qbox,
    )
    constexprs = dict(
        HAS_RPB=r3 is not None,
        REL64=wide,
        TMA=loads == "device",
        TMA_HOST=loads == "host",
        Q_TMA=q_spec is not None,
        NONFINITE=NONFINITE_SAFE[0],
        SUB=sub,
        SCALE_FIRST=r3 is not None or scale <= 0,  # else the scale is folded into max and exp2 (needs > 0)
        **box_cx,
        **cx,
    )
    return ForwardPlan(na_fwd_kernel, grid, (q_spec, k_spec, v_spec, None, None, None), scalars, constexprs)


def _groups_plan(q, q3, k3, v3, o3, l3, rpb, rank, hq, hkv, d, dv, geo, scale, cx):
    """The plan of the whole-group forward (config variant 2, :mod:`fused_forward_groups`): one item
    per (batch, dilation group, head), a persistent grid of programs."""
    ks, dl, _st, L, _nmax, cz = geo
    tokens = whole_groups(L, ks, dl, cz, max(d, dv), q.element_size())
    if not tokens:
        raise ValueError(
            f"triton config variant {GROUP_VARIANT} (whole-group forward) needs every window to be its whole "
            f"dilation group (extent == kernel_size * dilation, not causal) and at most the group kernel's "
            f"tokens and tile bytes; got extent {L[3 - rank :]}, kernel_size {ks[3 - rank :]}, dilation "
            f"{dl[3 - rank :]}, causal {cz[3 - rank :]}, head dim {max(d, dv)}"
        )
    block = max(16, pow2_at_least(tokens))
    r3, rs = rpb3(rpb, hq, rank)
    n_items = q.shape[0] * dl[0] * dl[1] * dl[2] * hq
    wide = rel64((q3, k3, v3, o3), ((ks[0], ks[1], ks[2]),), dl, dim_block(max(d, dv)))
    scalars = (
        *(strides5(x) for x in (q3, k3, v3, o3, l3)),
        rs,
        tuple(dl),
        hq,
        hq // hkv,
        n_items,
        scale * LOG2E,
    )
    keep = ("HEAD_DIM", "HEAD_DIM_V", "BLOCK_D", "BLOCK_DV", "PREC", "num_warps", "num_stages", "maxnreg")
    constexprs = dict(
        KS=tuple(ks),
        BLOCK=block,
        HAS_RPB=r3 is not None,
        REL64=wide,
        SCALE_FIRST=r3 is not None or scale <= 0,
        **{name: cx[name] for name in keep if name in cx},
    )
    # persistent programs, each looping over items: a few under the interpreter (its tests run the
    # loop); on a GPU one full wave, first from the register cap, then from the compiled kernel
    warps = cx["num_warps"]
    if q.device.type != "cuda":
        return ForwardPlan(na_fwd_groups_kernel, (min(n_items, 3),), (None,) * 6, scalars, constexprs)
    sms = _sm_count(q.device.index or 0)
    guess = max(1, min(32 // warps, 65536 // ((cx.get("maxnreg") or 168) * 32 * warps)))
    grid = (min(n_items, sms * guess),)
    return ForwardPlan(na_fwd_groups_kernel, grid, (None,) * 6, scalars, constexprs, (n_items, sms, guess))


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_per_sm(compiled, num_warps: int, fallback: int) -> int:
    """Programs of ``num_warps`` warps that one Hopper/Ampere SM holds at once, from a compiled
    kernel's registers (allocated per warp in units of 256) and shared memory; ``fallback`` where the
    launch returned no compiled kernel (Triton versions differ)."""
    regs = getattr(compiled, "n_regs", None)
    smem = getattr(getattr(compiled, "metadata", None), "shared", None)
    if not regs or smem is None:
        return fallback
    by_regs = 65536 // (-(-regs * 32 // 256) * 256 * num_warps)
    by_smem = (228 * 1024) // (smem + 1024)
    return max(1, min(by_regs, by_smem, 64 // num_warps, 32))
