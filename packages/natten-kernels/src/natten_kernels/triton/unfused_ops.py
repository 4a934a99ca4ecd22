"""Launchers for the unfused Triton kernels: the CUDA implementations of ``natten::na_qk_forward``,
``na_qk_backward``, ``na_av_forward`` and ``na_av_backward`` (heads-first; docs/internals.md).

``config`` (every op): ``[variant]`` or ``[variant, block_q, block_k, block_d, num_warps, gather]``, where
``variant`` is :data:`EXACT` (CUDA-core float32/float64 arithmetic, every dtype) or :data:`GEMM`
(``tl.dot`` on tensor cores: float16/bfloat16, float32 as TF32 only where torch allows TF32 matmuls).
``gather`` is 1 (weights move as whole rows, ``tl.gather`` in registers), 0 (per pair) or -1 (by size).
``[]`` picks GEMM, or EXACT for float64. Like the fused launchers they also run under
``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from natten_kernels.triton import unfused_kernels as U
from natten_kernels.triton.ops import _precision
from natten_kernels.triton.tiling import box
from natten_kernels.triton.variants import EXACT, GEMM

_GATHER_ELEMENTS = 8192  # largest [block_q, slots] register tile of the coalesced (gather) path
_FILL_SLOTS = 64  # slots per step when filling causal slots on the scatter path


@dataclass(frozen=True)
class Launch:
    """Everything a launch needs besides the tensors."""

    exact: bool
    block_q: int
    block_k: int
    block_d: int
    num_warps: int
    gather: int  # 1, 0 or -1 (by size)
    acc: object  # tl.float32 / tl.float64
    prec: str

    def kernel_args(self) -> dict:
        return {"EXACT": self.exact, "ACC": self.acc, "PREC": self.prec, "num_warps": self.num_warps}


def parse_config(config, dtype: torch.dtype, head_dim: int) -> Launch:
    import triton.language as tl

    cfg = [int(c) for c in config]
    variant = cfg[0] if cfg else (EXACT if dtype == torch.float64 else GEMM)
    if variant not in (EXACT, GEMM):
        raise ValueError(f"unfused triton config: variant must be {EXACT} (exact) or {GEMM} (gemm), got {variant}")
    if variant == GEMM and dtype == torch.float64:
        raise ValueError("unfused triton config: the gemm variant has no float64 kernels; use the exact variant")
    exact = variant == EXACT
    dim_block = max(16, triton.next_power_of_2(head_dim))
    gather = -1
    if len(cfg) > 1:
        if len(cfg) not in (5, 6):
            raise ValueError(
                "unfused triton config must be [variant] or [variant, block_q, block_k, block_d, num_warps"
                f"(, gather)], got {cfg}"
            )
        block_q, block_k, block_d, warps = cfg[1:5]
        gather = cfg[5] if len(cfg) == 6 else -1
    elif exact:  # FMA dots: smaller tiles than tensor cores take
        block_q, block_k, block_d, warps = 32, 32, 16, 4
    else:
        small = dim_block <= 128
        block_q, block_k, block_d, warps = (64 if small else 32), (64 if small else 32), dim_block, 4
    for name, v in (("block_q", block_q), ("block_k", block_k), ("block_d", block_d)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"unfused triton config: {name} must be a power of two >= 16, got {v}")
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    if gather not in (-1, 0, 1):
        raise ValueError(f"unfused triton config: gather must be -1, 0 or 1, got {gather}")
    return Launch(exact, block_q, block_k, block_d, warps, gather, acc, _precision(dtype))


@dataclass(frozen=True)
class Geometry:
    """The rank-3 problem of heads-first tensors ``[B, H, *S, C]``."""

    batch: int
    heads: int
    L: tuple
    ks: tuple
    dl: tuple
    st: tuple
    cz: tuple
    nmax: tuple

    @property
    def slots(self) -> int:
        return self.ks[0] * self.ks[1] * self.ks[2]

    @property
    def groups(self) -> int:
        return self.dl[0] * self.dl[1] * self.dl[2]

    def axis_args(self) -> tuple:
        return (*self.L, *self.ks, *self.dl, *self.st)

    def causal_args(self) -> dict:
        return {"C0": self.cz[0], "C1": self.cz[1], "C2": self.cz[2]}

    def query_box(self, block: int) -> tuple:
        return box(block, self.nmax, self.ks, align=self.st if any(s > 1 for s in self.st) else None)

    def key_box(self, block: int) -> tuple:
        return box(block, self.nmax, self.ks, align=self.ks)


def _pad3(values, fill):
    values = list(values)
    return tuple([fill] * (3 - len(values)) + values)


def geometry(x: torch.Tensor, kernel_size, dilation, stride, is_causal) -> Geometry:
    rank = len(kernel_size)
    L = _pad3(x.shape[2 : 2 + rank], 1)
    dl = _pad3(dilation, 1)
    return Geometry(
        batch=x.shape[0],
        heads=x.shape[1],
        L=L,
        ks=_pad3(kernel_size, 1),
        dl=dl,
        st=_pad3(stride, 1),
        cz=tuple(bool(c) for c in _pad3(is_causal, False)),
        nmax=tuple(-(-L[a] // dl[a]) for a in range(3)),
    )


def _as3(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, *S, C]`` -> ``[B, H, S0, S1, S2, C]`` (unit leading axes), last dim contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x.reshape(x.shape[0], x.shape[1], *([1] * (6 - x.dim())), *x.shape[2:])


def _strides(x3: torch.Tensor) -> tuple:
    return tuple(x3.stride(i) for i in range(5))


def _boxes(tq: tuple, tk: tuple) -> dict:
    """The query box ``T*`` and key box ``KB*`` as the kernels' constexprs."""
    return {"T0": tq[0], "T1": tq[1], "T2": tq[2], "KB0": tk[0], "KB1": tk[1], "KB2": tk[2]}


def _tiles(n: tuple, t: tuple) -> list:
    return [-(-n[a] // t[a]) for a in range(3)]


def _slots_pow2(g: Geometry) -> int:
    return triton.next_power_of_2(g.slots)


def _gather(g: Geometry, lc: Launch) -> bool:
    if lc.gather >= 0:
        return bool(lc.gather)
    return _slots_pow2(g) * lc.block_q <= _GATHER_ELEMENTS


def pairs(a, b, rpb, out, g: Geometry, fill: float, lc: Launch) -> None:
    """``out[i, t] = a_i . b_{n(i,t)} (+ rpb)``; invalid slots hold ``fill``."""
    if out.numel() == 0:
        return
    a3, b3, o3 = _as3(a), _as3(b), _as3(out)
    tq, tk = g.query_box(lc.block_q), g.key_box(lc.block_k)
    nt = _tiles(g.nmax, tq)
    gather = _gather(g, lc)
    r = None
    if rpb is not None:
        r = rpb.contiguous().reshape(g.heads, *([1] * (3 - (rpb.dim() - 1))), *rpb.shape[1:])
    rs = tuple(r.stride(i) for i in range(4)) if r is not None else (0, 0, 0, 0)
    grid = (nt[0] * nt[1] * nt[2] * g.groups, g.batch * g.heads)
    U.na_pairs_kernel[grid](
        a3,
        b3,
        r if r is not None else a3,
        o3,
        *_strides(a3),
        *_strides(b3),
        *_strides(o3),
        *rs,
        *g.axis_args(),
        nt[1],
        nt[2],
        g.groups,
        g.heads,
        a.shape[-1],
        FILL=fill,
        **g.causal_args(),
        **_boxes(tq, tk),
        BLOCK_D=min(lc.block_d, max(16, triton.next_power_of_2(a.shape[-1]))),
        KKP=_slots_pow2(g) if gather else _FILL_SLOTS,
        HAS_RPB=r is not None,
        GATHER=gather,
        **lc.kernel_args(),
    )


def _d_chunks(d: int, lc: Launch) -> tuple[int, int]:
    """(block, chunks) over an output's channels: one chunk on tensor cores, many when exact."""
    block = max(16, triton.next_power_of_2(d))
    if lc.exact:
        block = min(lc.block_d, block)
    return block, -(-d // block)


def weighted_sum(w, b, out, g: Geometry, lc: Launch) -> None:
    """``out_i = sum_t w[i, t] b_{n(i,t)}``."""
    if out.numel() == 0:
        return
    w3, b3, o3 = _as3(w), _as3(b), _as3(out)
    tq, tk = g.query_box(lc.block_q), g.key_box(lc.block_k)
    nt = _tiles(g.nmax, tq)
    block_d, chunks = _d_chunks(b.shape[-1], lc)
    grid = (nt[0] * nt[1] * nt[2] * g.groups, chunks, g.batch * g.heads)
    U.na_gather_kernel[grid](
        w3,
        b3,
        o3,
        *_strides(w3),
        *_strides(b3),
        *_strides(o3),
        *g.axis_args(),
        nt[1],
        nt[2],
        g.groups,
        g.heads,
        b.shape[-1],
        **g.causal_args(),
        **_boxes(tq, tk),
        BLOCK_D=block_d,
        KKP=_slots_pow2(g),
        GATHER=_gather(g, lc),
        **lc.kernel_args(),
    )


def inverse_sum(w, a, out, g: Geometry, lc: Launch) -> None:
    """``out_j = sum_{(i,t): n(i,t)=j} w[i, t] a_i`` (per key tile over its inverse neighborhood)."""
    if out.numel() == 0:
        return
    w3, a3, o3 = _as3(w), _as3(a), _as3(out)
    tq, tk = g.query_box(lc.block_q), g.key_box(lc.block_k)
    nk = _tiles(g.nmax, tk)
    block_d, chunks = _d_chunks(a.shape[-1], lc)
    grid = (nk[0] * nk[1] * nk[2] * g.groups, chunks, g.batch * g.heads)
    U.na_scatter_kernel[grid](
        w3,
        a3,
        o3,
        *_strides(w3),
        *_strides(a3),
        *_strides(o3),
        *g.axis_args(),
        nk[1],
        nk[2],
        g.groups,
        g.heads,
        a.shape[-1],
        max(g.nmax).bit_length() + 1,
        **g.causal_args(),
        **_boxes(tq, tk),
        BLOCK_D=block_d,
        KKP=_slots_pow2(g),
        GATHER=_gather(g, lc),
        **lc.kernel_args(),
    )


def rpb_grad(w, rpb, g: Geometry, lc: Launch) -> torch.Tensor:
    """Sum of ``w`` over batch and queries per relative position, in rpb's shape and dtype."""
    acc_dtype = torch.float64 if rpb.dtype == torch.float64 else torch.float32
    drpb = torch.zeros(rpb.shape, dtype=acc_dtype, device=rpb.device)
    if w.numel() > 0:
        w3 = _as3(w)
        U.na_rpb_grad_kernel[(drpb[0].numel(), g.heads)](
            w3, drpb, *_strides(w3), *g.axis_args(), g.batch, BLOCK_T=256, ACC=lc.acc
        )
    return drpb.to(rpb.dtype)


# ----------------------------------------------------------------------------- the ops


def na_qk_forward(q, k, rpb, kernel_size, dilation, stride, is_causal, config=()):
    g = geometry(q, kernel_size, dilation, stride, is_causal)
    attn = torch.empty((*q.shape[:-1], g.slots), dtype=q.dtype, device=q.device)
    pairs(q, k, rpb, attn, g, float("-inf"), parse_config(config, q.dtype, q.shape[-1]))
    return attn


def na_qk_backward(grad_attn, q, k, rpb, kernel_size, dilation, stride, is_causal, config=()):
    g = geometry(q, kernel_size, dilation, stride, is_causal)
    lc = parse_config(config, q.dtype, q.shape[-1])
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    weighted_sum(grad_attn, k, dq, g, lc)
    inverse_sum(grad_attn, q, dk, g, lc)
    drpb = q.new_empty(0) if rpb is None else rpb_grad(grad_attn, rpb, g, lc)
    return dq, dk, drpb


def na_av_forward(attn, v, kernel_size, dilation, stride, is_causal, config=()):
    g = geometry(v, kernel_size, dilation, stride, is_causal)
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    weighted_sum(attn, v, out, g, parse_config(config, v.dtype, v.shape[-1]))
    return out


def na_av_backward(grad_out, attn, v, kernel_size, dilation, stride, is_causal, config=()):
    g = geometry(v, kernel_size, dilation, stride, is_causal)
    lc = parse_config(config, v.dtype, v.shape[-1])
    grad_attn = torch.empty(attn.shape, dtype=attn.dtype, device=attn.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    pairs(grad_out, v, None, grad_attn, g, 0.0, lc)
    inverse_sum(attn, grad_out, dv, g, lc)
    return grad_attn, dv
