"""Launchers for the Triton kernels: the CUDA implementations of ``natten::na_fused_forward`` and
``natten::na_fused_backward`` (same arguments as the ops, ``config`` last; see docs/internals.md).

They also run under ``TRITON_INTERPRET=1`` on CPU tensors, which is how CI tests them.

``config``: forward ``[block_q, block_k, num_warps, num_stages]``, backward ``[resident block,
streamed block, num_warps, num_stages]`` (the dk/dv pass keeps a key tile and streams query tiles;
the dq pass, unless given its own entries, keeps a query tile of the resident size and streams key
tiles of the streamed size), each with an optional fifth entry, the variant: forward ``1`` loads
keys/values through TMA descriptors (Hopper; pointer loads where TMA cannot be used), forward ``2``
is the whole-group kernel (fused_forward_groups.py; only where every window is its whole dilation
group, the default there), backward ``1`` is the KV-parallel backward (one pass per key tile, dq by
float32 atomics; not deterministic). A
forward config may add a sixth entry, a cap on registers per thread (ptxas' ``maxnreg``, 32-255; 0 or
none: no cap), which lets more programs share an SM where short key loops leave latency to hide. A
backward config may add the dq pass's own ``block_q, block_k, num_warps, num_stages(, tma)``
(TMA as in the forward). ``[]`` or a ``0`` entry takes the per-problem default
(:func:`natten_kernels.triton.tiling.choose_config`). Block sizes are powers of two >= 16;
each block becomes a box over the rank-3 view (:func:`natten_kernels.triton.tiling.box`); configs
that would not fit in shared memory are shrunk (:func:`natten_kernels.triton.tiling.fit_shared_memory`).

Additional keys/values are merged exactly through the logsumexp: the neighborhood part comes from the
kernel (output in float32 and its LSE), the additional part from dense float32 matmuls over the
``N_add`` extra tokens (memory linear in tokens), and ``out = sum_i out_i * exp(lse_i - lse)``.
The backward uses the final LSE, so the kernels' gradients are already the right ones for the
neighborhood keys; the additional keys' gradients come from the same dense matmuls.
"""

from __future__ import annotations

import functools

import torch
import triton

from natten_kernels.triton.fused_backward import (
    na_bwd_delta_kernel,
    na_bwd_dkdv_kernel,
    na_bwd_dq_kernel,
    na_bwd_drpb_kernel,
)
from natten_kernels.triton.fused_forward import na_fwd_kernel
from natten_kernels.triton.fused_forward_groups import na_fwd_groups_kernel
from natten_kernels.triton.tiling import GROUP_VARIANT, choose_config, fit_shared_memory, pow2_at_least, whole_groups
from natten_kernels.triton.tiling import tile_shapes as tile_shapes  # re-exported for tests/benchmarks

LOG2E = 1.4426950408889634
INT32_MAX = 2**31 - 1


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


@functools.lru_cache(maxsize=8)
def _smem_limit(device_index: int) -> int:
    """Shared memory a config may plan for: the device's per-block opt-in size, less a margin."""
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", 96 * 1024)) - 2048


def _parse(config, head_dim, dtype, geometry=None, backward=False, device=None):
    """Forward ``(block_q, block_k, num_warps, num_stages, variant, maxnreg)``; backward ``(block_q,
    block_k, num_warps, num_stages, variant)`` and five more entries: the dq pass's own ``(block_q,
    block_k, num_warps, num_stages, tma)``. ``[]`` is the default of the problem ``geometry =
    (spatial, kernel_size, dilation, stride, is_causal)``; in a given config, ``0`` block, warp or
    stage entries take that default's value and a missing variant or register cap is 0; a backward
    config without the dq entries runs its dq pass with its own first four."""
    lengths = (0, 4, 5, 9, 10) if backward else (0, 4, 5, 6)
    if len(config) not in lengths or any(int(c) < 0 for c in config):
        what = "[block_q, block_k, num_warps, num_stages(, variant(, maxnreg))]"
        if backward:
            what = (
                "[resident, streamed, num_warps, num_stages(, variant(, dq: block_q, block_k, warps, stages(, tma)))]"
            )
        raise ValueError(f"triton config must be {what}, got {list(config)}")
    if backward and len(config) > 5:
        main = _parse(list(config[:5]), head_dim, dtype, geometry, True, device)[:5]
        return (*main, *_dq_part(config[5:], main, head_dim, dtype, device))
    cfg = [int(c) for c in config] if config else [0, 0, 0, 0]
    if not config:
        variant = maxnreg = None  # the default's
    else:
        variant = cfg[4] if len(cfg) >= 5 else 0
        maxnreg = cfg[5] if len(cfg) == 6 else 0
    if maxnreg and not 32 <= maxnreg <= 255:
        raise ValueError(f"triton config maxnreg must be 0 (no cap) or 32-255 registers, got {maxnreg}")
    elem = torch.finfo(dtype).bits // 8
    dq_default = ()
    if 0 in cfg[:4] or variant is None:
        geo = tuple(tuple(x) for x in geometry) if geometry is not None else ((1,), (1,), (1,), (1,), (False,))
        default = choose_config(head_dim, elem, *geo, backward=backward, kv_parallel=bool(variant))
        cfg = [c or dflt for c, dflt in zip(cfg[:4], default)]
        variant = default[4] if variant is None else variant
        if maxnreg is None:
            maxnreg = default[5] if len(default) == 6 and not backward else 0
        if not config:  # the whole default: its dq pass too
            dq_default = tuple(default[5:])
    cfg = cfg[:4]
    _check_blocks(cfg, "")
    if device is not None and device.type == "cuda" and (backward or variant != GROUP_VARIANT):
        cfg = fit_shared_memory(cfg, head_dim, elem, backward, _smem_limit(device.index or 0))
    if backward:
        return (*cfg, variant, *_dq_part(dq_default, cfg, head_dim, dtype, device))
    return (*cfg, variant, maxnreg)


def _check_blocks(cfg, prefix: str) -> None:
    for name, v in ((f"{prefix}block_q", cfg[0]), (f"{prefix}block_k", cfg[1])):
        if v < 16 or v & (v - 1):
            raise ValueError(f"triton config {name} must be a power of two >= 16, got {v}")


def _dq_part(dq_config, main, head_dim, dtype, device):
    """The dq pass's ``(block_q, block_k, num_warps, num_stages, tma)``: ``dq_config`` (``0`` entries
    take the main config's), or the main config's first four without TMA."""
    cfg = [int(c) for c in dq_config] or [0, 0, 0, 0]
    cfg = [c or m for c, m in zip(cfg[:4], main[:4])] + [cfg[4] if len(cfg) == 5 else 0]
    _check_blocks(cfg, "dq ")
    if device is not None and device.type == "cuda":
        elem = torch.finfo(dtype).bits // 8
        cfg[:4] = fit_shared_memory(cfg[:4], head_dim, elem, True, _smem_limit(device.index or 0))
    return tuple(cfg)


def _rel64(tensors, boxes, dl, extra) -> bool:
    """Whether offsets relative to a tile's base (within the largest box) can exceed int32."""
    worst = 0
    for x in tensors:
        for box in boxes:
            worst = max(worst, sum((box[a] - 1) * dl[a] * abs(x.stride(a + 1)) for a in range(3)) + extra)
    return worst > INT32_MAX


@functools.lru_cache(maxsize=8)
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def _tma_ok(tensors, elem) -> bool:
    """TMA needs a Hopper (or newer) GPU and tensors with 16-byte aligned bases and strides (all but
    the last, which must be 1); elsewhere the TMA variant runs with pointer loads."""

    def ok(x):
        strides = (x.stride(i) * elem for i in range(x.dim() - 1))
        return x.data_ptr() % 16 == 0 and x.stride(-1) == 1 and all(s % 16 == 0 for s in strides)

    return all(x.is_cuda and _has_tma(x.device.index or 0) and ok(x) for x in tensors)


def _tma_scratch(size, align, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_tma_allocator():
    """Device-side TMA descriptors need a scratch allocator. Triton keeps it per thread (a context
    variable), and autograd runs the backward in its own thread, so it is checked before every launch
    that needs it; where none is set, torch's caching allocator backs it (a user's own is kept)."""
    try:
        from triton.runtime import _allocation

        if not isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
            return
    except (ImportError, AttributeError):  # private API moved: set ours
        pass
    triton.set_allocator(_tma_scratch)


def _descriptor_spec(x, dim, box, dl):
    """``(shape, strides, block)`` of a TMA descriptor over ``[B, L0, L1, L2, H * dim]`` with ``[1, *box,
    dim]`` blocks, or None where one cannot describe ``x`` (dilation, a head dim that does not fill its
    block, heads not packed, not TMA-aligned): rows past an axis read as zeros, one descriptor serves
    every program."""
    if any(a != 1 for a in dl) or dim != _dim_block(dim) or x.stride(4) != dim or not _tma_ok((x,), x.element_size()):
        return None
    return [*x.shape[:4], x.shape[4] * dim], [*x.stride()[:4], 1], [1, *box, dim]


def _descriptor(x, spec):
    """The host-built descriptor of ``spec`` (:func:`_descriptor_spec`) over ``x``'s memory."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(x, *spec)


def _tma_tiles_ok(resident_rows: int, streamed_rows: int, d: int, dv: int) -> bool:
    """Whether streamed tiles may come through TMA for these blocks. With Triton 3.6 on the H200,
    square streamed tiles (as many rows as the padded head dim, 32 or 64) against a resident tile of
    64 rows or more gave wrong results: forward outputs and dk (max error 0.7-2.4 on 2D bf16/fp16
    problems; perf notes v5). Those configs load by pointer instead. (Perf notes v7 traced that fault
    to the resident tile's TMA load, :func:`_resident_tma_ok`; this older guard stays until its
    configs are re-measured with streamed TMA.)"""
    return not (resident_rows >= 64 and streamed_rows in (_dim_block(d), _dim_block(dv)) and streamed_rows <= 64)


def _resident_tma_ok(resident_box, streamed_rows: int, d: int, dv: int) -> bool:
    """Whether a resident tile (forward q, dq pass q/dO, dk/dv pass k/v) may load through a host-built
    TMA descriptor. Triton 3.6 miscompiles one case (perf notes v7, docs/gpu.md): a resident box with
    more than one non-unit axis (a 2D/3D tile, reshaped from the descriptor's rank-5 block) against
    streamed tiles with as many rows as the padded head dim. Every output of such a launch was wrong
    (S3's 128x128 forward at head dim 128: LSE off by 0.72, outputs 300x the rounding error), at head
    dims 32, 64 and 128, in the forward, the dq pass and the dk/dv pass; the same tiles loaded by
    pointer, or through 1D boxes, were right. Such resident tiles load by pointer."""
    multi_axis = sum(int(b) > 1 for b in resident_box) > 1
    return not (multi_axis and streamed_rows in (_dim_block(d), _dim_block(dv)))


def _tma_specs(k3, v3, kbox, d, dv, dl, want_tma: bool, device_ok: bool = True):
    """How a kernel loads two operands. Streamed: K and V (Q and dO in the dk/dv pass); resident,
    with ``device_ok=False``: q and dO in the dq pass, k and v in the dk/dv pass, which then land in
    shared memory without staging through registers. Returns ``(k spec, v spec, "host")`` where
    descriptors built here describe the tensors (:func:`_descriptor_spec`), ``(None, None,
    "device")`` (each program builds descriptors over its dilation group: a fixed cost per program
    that short key loops feel) where only TMA can and the kernel has that path, else ``(None, None,
    "")`` with pointer loads."""
    if not (want_tma and _tma_ok((k3, v3), k3.element_size())):
        return None, None, ""
    ks, vs = _descriptor_spec(k3, d, kbox, dl), _descriptor_spec(v3, dv, kbox, dl)
    if ks is not None and vs is not None:
        return ks, vs, "host"
    return None, None, "device" if device_ok else ""


def _tma_operands(k3, v3, kbox, d, dv, dl, want_tma: bool, device_ok: bool = True):
    """What a kernel gets for two operands (:func:`_tma_specs`): ``(k, v, "host")`` as descriptors,
    ``(k3, v3, "device")`` (the TMA allocator set), or ``(k3, v3, "")``."""
    ks, vs, how = _tma_specs(k3, v3, kbox, d, dv, dl, want_tma, device_ok)
    if how == "host":
        return _descriptor(k3, ks), _descriptor(v3, vs), how
    if how == "device":
        _ensure_tma_allocator()
    return k3, v3, how


def _rpb3(rpb, h, rank):
    if rpb is None:
        return None, (0, 0, 0, 0)
    r = rpb.to(torch.float32).contiguous()
    r = r.reshape(h, *([1] * (3 - rank)), *r.shape[1:])
    return r, tuple(r.stride(i) for i in range(4))


def _dim_block(d):
    return max(16, pow2_at_least(d))


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


def _plan(q, q3, rank, kernel_size, dilation, stride, is_causal, config, d, dv, backward):
    """Geometry, the resolved config and the constexprs of one launch (query and key boxes excepted:
    :func:`_boxes` adds them, as the backward's two passes swap the blocks' roles)."""
    ks, dl, st, cz, L, nmax = _geometry(q3, kernel_size, dilation, stride, is_causal)
    geometry = (q.shape[1:-2], kernel_size, dilation, stride, is_causal)
    cfg = _parse(config, max(d, dv), q.dtype, geometry, backward, q.device)
    constexprs = dict(
        RANK=rank,
        C0=cz[0],
        C1=cz[1],
        C2=cz[2],
        HEAD_DIM=d,
        HEAD_DIM_V=dv,
        BLOCK_D=_dim_block(d),
        BLOCK_DV=_dim_block(dv),
        PREC=_precision(q.dtype),
        num_warps=cfg[2],
        num_stages=cfg[3],
    )
    if not backward and cfg[5]:
        constexprs["maxnreg"] = cfg[5]
    return (ks, dl, st, L, nmax, cz), cfg, constexprs


def _boxes(geo, query_block, key_block, search=True):
    """(query box, key box, their constexprs) for two block sizes (``search``: see tile_shapes)."""
    ks, dl, st, L, _nmax, cz = geo
    tq, tk = tile_shapes(ks, dl, st, L, query_block, key_block, cz, search)
    return tq, tk, dict(T0=tq[0], T1=tq[1], T2=tq[2], KB0=tk[0], KB1=tk[1], KB2=tk[2])


_FORWARD_PLANS: dict = {}  # launch plans of recent problems (a bounded FIFO; see _launch_forward)
_MAX_PLANS = 256


def _launch_forward(
    q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config
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
        q.dtype,
        q.device,
        None if rpb is None else rpb.shape,
        tuple(kernel_size),
        tuple(dilation),
        tuple(stride),
        tuple(is_causal),
        scale,
        tuple(config),
        q.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32,
        aligned,
    )
    plan = _FORWARD_PLANS.get(key)
    if plan is None:
        plan = _forward_plan(
            q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config
        )
        while len(_FORWARD_PLANS) >= _MAX_PLANS:
            _FORWARD_PLANS.pop(next(iter(_FORWARD_PLANS)), None)
        _FORWARD_PLANS[key] = plan
    kernel, grid, specs, scalars, constexprs, resident = plan
    r = lse if rpb is None else rpb.to(torch.float32).contiguous()
    tensors = (q, k, v, out, lse, r)
    args = [t if spec is None else _descriptor(t, spec) for t, spec in zip(tensors, specs)]
    if constexprs.get("TMA"):
        _ensure_tma_allocator()
    compiled = kernel[grid](*args, *scalars, **constexprs)
    if resident is not None:  # a persistent grid: one wave of the programs that fit, now that they are known
        plan[1] = (min(resident[0], resident[1] * _programs_per_sm(compiled, constexprs["num_warps"], resident[2])),)
        plan[5] = None


def _forward_plan(
    q, k, v, rpb, out, lse, rank, hq, hkv, d, dv, kernel_size, dilation, stride, is_causal, scale, config
):
    """``(kernel, grid, descriptor specs of q, k, v, out, lse, rpb (None: the tensor itself), the
    scalar arguments, the constexprs)`` of one forward launch; its tensors are views of the call's."""
    q3, k3, v3 = _as3(q, rank), _as3(k, rank), _as3(v, rank)
    o3, l3 = _as3(out, rank), _as3_lse(lse, rank)
    geo, (bq, bk, _w, _s, variant, _maxnreg), cx = _plan(
        q, q3, rank, kernel_size, dilation, stride, is_causal, config, d, dv, False
    )
    if variant == GROUP_VARIANT:
        return _groups_plan(q, q3, k3, v3, o3, l3, rpb, rank, hq, hkv, d, dv, geo, scale, cx)
    ks, dl, st, L, nmax, _cz = geo
    tq, tk, boxes = _boxes(geo, bq, bk)
    rel64 = _rel64((k3, v3), (tk,), dl, _dim_block(max(d, dv)))
    want = bool(variant) and not rel64 and _tma_tiles_ok(bq, bk, d, dv)
    k_spec, v_spec, tma = _tma_specs(k3, v3, tk, d, dv, dl, want)
    q_ok = tma == "host" and _resident_tma_ok(tq, bk, d, dv)
    q_spec = _descriptor_spec(q3, d, tq, dl) if q_ok else None
    nt = [-(-nmax[a] // tq[a]) for a in range(3)]
    G = dl[0] * dl[1] * dl[2]
    r3, rs = _rpb3(rpb, hq, rank)
    grid = (nt[0] * nt[1] * nt[2] * G, hq, q.shape[0])
    scalars = (
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
        scale * LOG2E,
    )
    constexprs = dict(
        HAS_RPB=r3 is not None,
        REL64=rel64,
        TMA=tma == "device",
        TMA_HOST=tma == "host",
        Q_TMA=q_spec is not None,
        SCALE_FIRST=r3 is not None or scale <= 0,  # else the scale is folded into max and exp2 (needs > 0)
        **boxes,
        **cx,
    )
    return [na_fwd_kernel, grid, (q_spec, k_spec, v_spec, None, None, None), scalars, constexprs, None]


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
    r3, rs = _rpb3(rpb, hq, rank)
    n_items = q.shape[0] * dl[0] * dl[1] * dl[2] * hq
    rel64 = _rel64((q3, k3, v3, o3), ((ks[0], ks[1], ks[2]),), dl, _dim_block(max(d, dv)))
    scalars = (
        *_strides5(q3),
        *_strides5(k3),
        *_strides5(v3),
        *_strides5(o3),
        *_strides5(l3),
        *rs,
        *dl,
        hq,
        hq // hkv,
        n_items,
        scale * LOG2E,
    )
    keep = ("HEAD_DIM", "HEAD_DIM_V", "BLOCK_D", "BLOCK_DV", "PREC", "num_warps", "num_stages", "maxnreg")
    constexprs = dict(
        KS0=ks[0],
        KS1=ks[1],
        KS2=ks[2],
        BLOCK=block,
        HAS_RPB=r3 is not None,
        REL64=rel64,
        SCALE_FIRST=r3 is not None or scale <= 0,
        **{name: cx[name] for name in keep if name in cx},
    )
    # persistent programs, each looping over items: a few under the interpreter (its tests run the
    # loop); on a GPU one full wave, first from the register cap, then from the compiled kernel
    warps = cx["num_warps"]
    if q.device.type != "cuda":
        return [na_fwd_groups_kernel, (min(n_items, 3),), (None,) * 6, scalars, constexprs, None]
    sms = _sm_count(q.device.index or 0)
    guess = max(1, min(32 // warps, 65536 // ((cx.get("maxnreg") or 168) * 32 * warps)))
    grid = (min(n_items, sms * guess),)
    return [na_fwd_groups_kernel, grid, (None,) * 6, scalars, constexprs, (n_items, sms, guess)]


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

    Deterministic by default: dq per query tile, dk/dv per key tile over its inverse neighborhood,
    drpb per (head, relative position), each written once by one program with a fixed reduction
    order. Variant 1 of ``config`` (KV parallelism) folds dq into the dk/dv pass with atomics.
    """
    rank = q.dim() - 3
    hq, hkv, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = float(scale)
    has_add = additional_keys is not None and additional_keys.numel() > 0
    grad_out = grad_out.contiguous()
    lse = lse.float().contiguous()
    delta = _delta(grad_out, out, grad_lse)
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
    dk3, dv3 = _as3(dk, rank), _as3(dv, rank)
    l3, de3 = _as3_lse(lse, rank), _as3_lse(delta, rank)
    geo, cfg, cx = _plan(q, q3, rank, kernel_size, dilation, stride, is_causal, config, d, dvd, True)
    (resident, streamed, _w, _s, kv_parallel), (dq_bq, dq_bk, dq_warps, dq_stages, dq_tma) = cfg[:5], cfg[5:]
    ks, dl, st, L, nmax, _cz = geo
    # backward blocks are [resident, streamed]: the dk/dv pass keeps a key tile and streams queries;
    # the dq pass (its own config) keeps a query tile and streams keys
    tq, tk, dq_boxes = _boxes(geo, dq_bq, dq_bk)
    tq2, tk2, dkdv_boxes = _boxes(geo, streamed, resident, search=False)
    G = dl[0] * dl[1] * dl[2]
    r3, rs = _rpb3(rpb, hq, rank)
    sizes = (*L, *ks, *dl, *st)
    rp = r3 if r3 is not None else l3
    # KV-parallel: dq accumulates in float32 by atomics (in place when dq already is float32)
    dq_acc = (
        (dq if dq.dtype == torch.float32 else torch.empty(dq.shape, dtype=torch.float32, device=dq.device))
        if kv_parallel
        else dq
    )
    dq3 = _as3(dq_acc, rank)
    if q3.stride() != dq3.stride():  # q and dq share strides in the kernels (dq is contiguous)
        q3 = q3.contiguous()
    cx["REL64"] = _rel64((q3, k3, v3, do3), (tq, tk, tq2, tk2), dl, _dim_block(max(d, dvd)))
    cx["HAS_RPB"] = r3 is not None
    cx["SCALE_FIRST"] = r3 is not None or scale <= 0  # else folded into the exp2's argument (needs > 0)
    strides = (*_strides5(q3), *_strides5(k3), *_strides5(v3), *_strides5(do3), *_strides5(l3), *rs)
    if kv_parallel:
        dq_acc.zero_()
    else:
        want = bool(dq_tma) and not cx["REL64"] and _tma_tiles_ok(dq_bq, dq_bk, d, dvd)
        k_arg, v_arg, tma = _tma_operands(k3, v3, tk, d, dvd, dl, want)
        res_ok = tma == "host" and _resident_tma_ok(tq, dq_bk, d, dvd)
        q_res, do_res, res = _tma_operands(q3, do3, tq, d, dvd, dl, res_ok, device_ok=False)
        dq_cx = dict(cx, num_warps=dq_warps, num_stages=dq_stages, TMA=tma == "device", TMA_HOST=tma == "host")
        dq_cx["RES_TMA"] = res == "host"
        nt = [-(-nmax[a] // tq[a]) for a in range(3)]
        na_bwd_dq_kernel[(nt[0] * nt[1] * nt[2] * G, hq, q.shape[0])](
            q_res,
            k_arg,
            v_arg,
            do_res,
            l3,
            de3,
            dq3,
            rp,
            *strides,
            *sizes,
            nt[1],
            nt[2],
            G,
            hq // hkv,
            scale * LOG2E,
            scale,
            **dq_boxes,
            **dq_cx,
        )
    if k3.stride() != dk3.stride():
        k3 = k3.contiguous()
    if v3.stride() != dv3.stride():
        v3 = v3.contiguous()
    strides = (*_strides5(q3), *_strides5(k3), *_strides5(v3), *_strides5(do3), *_strides5(l3), *rs)
    nk = [-(-nmax[a] // tk2[a]) for a in range(3)]
    logn = max(n.bit_length() for n in nmax) + 1
    want = not kv_parallel and _tma_tiles_ok(resident, streamed, d, dvd)
    q_arg, do_arg, tma = _tma_operands(q3, do3, tq2, d, dvd, dl, want, device_ok=False)
    res_ok = tma == "host" and _resident_tma_ok(tk2, streamed, d, dvd)
    k_res, v_res, res = _tma_operands(k3, v3, tk2, d, dvd, dl, res_ok, device_ok=False)
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
        *sizes,
        nk[1],
        nk[2],
        G,
        hq // hkv,
        scale * LOG2E,
        scale,
        logn,
        DQ_ATOMIC=bool(kv_parallel),
        TMA_HOST=tma == "host",
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
            *sizes,
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
