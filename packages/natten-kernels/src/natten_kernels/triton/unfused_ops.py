"""Launchers for the unfused Triton kernels: the CUDA implementations of ``natten::na_qk_forward``,
``na_qk_backward``, ``na_av_forward`` and ``na_av_backward`` (heads-first; docs/internals.md).

``config`` (every op): ``[variant]`` or ``[variant, block_q, block_k, block_d, num_warps, path, num_stages]``
(the last one or two optional), where
``variant`` is :data:`EXACT` (CUDA-core float32/float64 arithmetic, every dtype) or :data:`GEMM`
(tensor cores allowed: float16/bfloat16, float32 as TF32 only where torch allows TF32 matmuls).
``path`` picks how a query box meets its window:

* ``0`` halo, per pair: ``tl.dot`` against the key tiles of the box's halo, weights addressed per pair;
* ``1`` halo, rows: the same, weights moved as whole rows and mapped to slots by ``tl.gather``;
* ``2`` direct: a query box walks its window on CUDA cores (unfused_direct.py); ``block_q`` and
  ``block_d`` are the query box and channel chunk of the kernel that consumes weights (av, dq),
  ``block_k`` the query box of the kernel that makes them (qk, grad of attn), any powers of two;
* ``3`` band: inner-axis query segments against key rows on tensor cores (unfused_band.py);
  ``block_q`` / ``block_k`` are the segments of the consuming / producing kernel (powers of two >= 16),
  ``block_d`` the outer rows a program walks (a power of two);
* ``-1`` (default): the exact variant always runs direct; the gemm variant runs band where a segment's
  windows reach at most 128 keys of a row and are small next to the dilation groups (measured: S5 and
  S4, 7x7 and 13x13), else the halo kernels (rows when a box's rows fit in registers), which win where
  windows cover most of a dilation group (S5 with dilation 8).

``num_stages`` (0 or absent: Triton's default) sets the software pipelining of the band kernels' loops.
The key-side kernel of the backward (dk, dv) always walks halos. ``[]`` picks GEMM, or EXACT for
float64. Like the fused launchers they also run under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from natten_kernels.triton import unfused_band as UB
from natten_kernels.triton import unfused_direct as UD
from natten_kernels.triton import unfused_kernels as U
from natten_kernels.triton.layout import dim_block, precision
from natten_kernels.triton.tiling import box, pow2_at_least
from natten_kernels.triton.variants import EXACT, GEMM

HALO_PAIRS, HALO_ROWS, DIRECT, BAND, AUTO = 0, 1, 2, 3, -1
_GATHER_ELEMENTS = 8192  # largest [block_q, slots] register tile of the halo-rows path
_FILL_SLOTS = 64  # slots per step when filling causal slots on the halo per-pair path
# direct path defaults: the largest query box, and the register tiles (elements) that cap it: the av
# kernel's [box, channels] accumulator, the qk kernel's [box, segment, channels] key rows
_DIRECT_BOX, _DIRECT_AV_ELEMENTS, _DIRECT_QK_ELEMENTS = 64, 2048, 8192
_DIRECT_SEGMENT = 8  # slots of the inner axis the direct qk kernel takes per step
# band path defaults: query segment, outer rows per program, widest key span per tl.dot
_BAND_SEGMENT, _BAND_ROWS, _BAND_MAX_KEYS = 16, 4, 128


@dataclass(frozen=True)
class Launch:
    """Everything a launch needs besides the tensors. Blocks and warps of 0 take the path's defaults."""

    exact: bool
    block_q: int
    block_k: int
    block_d: int
    num_warps: int
    path: int
    acc: object  # tl.float32 / tl.float64
    prec: str
    num_stages: int = 0

    @property
    def warps(self) -> int:
        return self.num_warps or 4

    def kernel_args(self) -> dict:
        return {"EXACT": self.exact, "ACC": self.acc, "PREC": self.prec, "num_warps": self.warps}


def parse_config(config, dtype: torch.dtype, head_dim: int) -> Launch:
    import triton.language as tl

    cfg = [int(c) for c in config]
    variant = cfg[0] if cfg else (EXACT if dtype == torch.float64 else GEMM)
    if variant not in (EXACT, GEMM):
        raise ValueError(f"unfused triton config: variant must be {EXACT} (exact) or {GEMM} (gemm), got {variant}")
    if variant == GEMM and dtype == torch.float64:
        raise ValueError("unfused triton config: the gemm variant has no float64 kernels; use the exact variant")
    exact = variant == EXACT
    path = AUTO
    if len(cfg) > 1:
        if len(cfg) not in (5, 6, 7):
            raise ValueError(
                "unfused triton config must be [variant] or [variant, block_q, block_k, block_d, num_warps"
                f"(, path(, num_stages))], got {cfg}"
            )
        block_q, block_k, block_d, warps = cfg[1:5]
        path = cfg[5] if len(cfg) >= 6 else AUTO
        stages = cfg[6] if len(cfg) == 7 else 0
        if warps < 1 or warps & (warps - 1) or stages < 0:
            raise ValueError(f"unfused triton config: num_warps must be a power of two, num_stages >= 0, got {cfg}")
        if path not in (AUTO, HALO_PAIRS, HALO_ROWS, DIRECT, BAND):
            raise ValueError(f"unfused triton config: path must be -1, 0, 1, 2 or 3, got {path}")
        if path == BAND and exact:
            raise ValueError("unfused triton config: the band path runs on tensor cores; use the gemm variant")
        floor = 16 if path in (HALO_PAIRS, HALO_ROWS, BAND) else 1  # these tiles feed tl.dot
        floor_d = 1 if path == BAND else floor  # band: block_d counts rows
        for name, v, lo in (("block_q", block_q, floor), ("block_k", block_k, floor), ("block_d", block_d, floor_d)):
            if v < lo or v & (v - 1):
                raise ValueError(f"unfused triton config: {name} must be a power of two >= {lo}, got {v}")
    else:
        block_q = block_k = block_d = warps = stages = 0
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    return Launch(exact, block_q, block_k, block_d, warps, path, acc, precision(dtype), stages)


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
        return (self.L, self.ks, self.dl, self.st)

    @property
    def full(self) -> bool:
        """Every dilation group is at least a kernel long, so non-causal windows span the whole kernel."""
        return all(self.L[a] // self.dl[a] >= self.ks[a] for a in range(3))

    @property
    def dense(self) -> bool:
        """Windows span at least half of every dilation group: a box's halo is then nearly all useful,
        which tensor cores do best (S5 with dilation 8: halo 1.3 ms, direct 2.0)."""
        return all(self.nmax[a] <= 2 * self.ks[a] for a in range(3))

    def causal_args(self) -> dict:
        return {"C": self.cz}

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
    return {"T": tuple(tq), "KB": tuple(tk)}


def _tiles(n: tuple, t: tuple) -> list:
    return [-(-n[a] // t[a]) for a in range(3)]


def _slots_pow2(g: Geometry) -> int:
    return max(16, pow2_at_least(g.slots))  # tl.gather wants rows of at least 16


def _path(g: Geometry, lc: Launch, head_dim: int) -> int:
    if lc.path != AUTO:
        return lc.path
    if lc.exact:
        return DIRECT
    if _band_span(g, lc.block_q or _BAND_SEGMENT) <= _BAND_MAX_KEYS and not g.dense:
        return BAND
    return _halo_path(g, lc, head_dim)


def _halo_path(g: Geometry, lc: Launch, head_dim: int) -> int:
    """Rows when a box's rows fit in registers, else per pair (the key-side kernel's only choice)."""
    if lc.path in (HALO_PAIRS, HALO_ROWS):
        return lc.path
    return HALO_ROWS if _slots_pow2(g) * _halo_blocks(g, lc, head_dim)[0] <= _GATHER_ELEMENTS else HALO_PAIRS


def _halo_blocks(g: Geometry, lc: Launch, head_dim: int) -> tuple[int, int, int]:
    """(block_q, block_k, block_d) of the halo kernels: the config's, else tensor-core or FMA tiles."""
    if lc.block_q:
        return max(16, lc.block_q), max(16, lc.block_k), max(16, lc.block_d)
    if lc.exact:
        return 32, 32, 16
    block_d = dim_block(head_dim)
    small = block_d <= 128
    return (64 if small else 32), (64 if small else 32), block_d


def _direct_blocks(g: Geometry, lc: Launch, head_dim: int) -> tuple[int, int, int]:
    """(av query box, qk query box, av channel block) of the direct kernels: the config's
    ``block_q``, ``block_k`` and ``block_d``, else boxes that keep the register tiles bounded."""
    if lc.block_q:
        return lc.block_q, lc.block_k, lc.block_d
    d = _pow2(head_dim)
    qk_box = _DIRECT_QK_ELEMENTS // (_segment(g) * d)
    return max(16, min(_DIRECT_BOX, _DIRECT_AV_ELEMENTS // d)), max(4, min(_DIRECT_BOX, qk_box)), min(64, d)


def _band_span(g: Geometry, segment: int) -> int:
    """The most keys a segment's windows reach on the inner axis."""
    return segment + g.ks[2] + g.st[2] - 2


@dataclass(frozen=True)
class Band:
    """A band launch: segment ``BJ`` and key span ``BK`` of the inner axis, the outer box ``R0 x R1``
    of rows a program walks, and the grid's tile counts."""

    bj: int
    bk: int
    r0: int
    r1: int
    nt: tuple
    # measured on S5 / S4 (docs/perf-notes.md, unfused v2): 1 warp; 128 registers (12 -> 16 resident
    # warps) except for the producing kernel at head dim 64
    warps: int
    maxnreg: int | None

    def grid(self, g: Geometry) -> tuple:
        return (self.nt[0] * self.nt[1] * self.nt[2] * g.groups, g.batch * g.heads)

    def kernel_args(self, g: Geometry, lc: Launch, head_dim: int) -> dict:
        return {
            **g.causal_args(),
            "FULL": g.full,
            "R0": self.r0,
            "R1": self.r1,
            "BJ": self.bj,
            "BK": self.bk,
            "BLOCK_D": max(16, _pow2(head_dim)),
            "PREC": lc.prec,
            "ACC": lc.acc,
            "num_warps": lc.num_warps or self.warps,
            **({"num_stages": lc.num_stages} if lc.num_stages else {}),
            **({"maxnreg": self.maxnreg} if self.maxnreg else {}),
        }


def _band(g: Geometry, lc: Launch, head_dim: int, producer: bool) -> Band:
    """The band launch of the kernel that makes weights (``producer``: qk, grad of attn) or uses them."""
    bj = (lc.block_k if producer else lc.block_q) or _BAND_SEGMENT
    rows = lc.block_d or _BAND_ROWS
    r1 = min(rows, g.nmax[1])
    r0 = min(max(1, rows // r1), g.nmax[0])
    bk = min(_BAND_MAX_KEYS, _pow2(_band_span(g, bj)))
    maxnreg = None if producer and head_dim > 32 else 128
    return Band(bj, bk, r0, r1, tuple(_tiles(g.nmax, (r0, r1, bj))), 1, maxnreg)


def _segment(g: Geometry) -> int:
    return min(_DIRECT_SEGMENT, _pow2(g.ks[2]))


def _pow2(n: int) -> int:
    return pow2_at_least(max(n, 1))


def pairs(a, b, rpb, out, g: Geometry, fill: float, lc: Launch) -> None:
    """``out[i, t] = a_i . b_{n(i,t)} (+ rpb)``; invalid slots hold ``fill``."""
    if out.numel() == 0:
        return
    a3, b3, o3 = _as3(a), _as3(b), _as3(out)
    r = None
    if rpb is not None:
        r = rpb.contiguous().reshape(g.heads, *([1] * (3 - (rpb.dim() - 1))), *rpb.shape[1:])
    rs = tuple(r.stride(i) for i in range(4)) if r is not None else (0, 0, 0, 0)
    path = _path(g, lc, a.shape[-1])
    args = (a3, b3, r if r is not None else a3, o3, _strides(a3), _strides(b3), _strides(o3), rs)
    args += g.axis_args()
    tail = (g.groups, g.heads, a.shape[-1])
    if path == BAND:
        band = _band(g, lc, a.shape[-1], producer=True)
        kw = band.kernel_args(g, lc, a.shape[-1])
        kw.update(
            FILL=fill,
            HAS_RPB=r is not None,
            SW=_pow2(g.ks[2]),
        )
        UB.na_pairs_band_kernel[band.grid(g)](*args, *band.nt[1:], *tail, **kw)
        return
    if path == DIRECT:
        tq = g.query_box(_direct_blocks(g, lc, a.shape[-1])[1])
    else:
        bq, bk, bd = _halo_blocks(g, lc, a.shape[-1])
        tq = g.query_box(bq)
    nt = _tiles(g.nmax, tq)
    grid = (nt[0] * nt[1] * nt[2] * g.groups, g.batch * g.heads)
    args += (nt[1], nt[2], *tail)
    common = {"FILL": fill, "HAS_RPB": r is not None, "ACC": lc.acc, "num_warps": lc.warps, **g.causal_args()}
    if path == DIRECT:
        bd = _pow2(a.shape[-1])
        even = a.shape[-1] == bd
        kw = {"FULL": g.full, "BLOCK_D": bd, "EVEN_D": even, "CH": _segment(g), "T": tuple(tq), **common}
        UD.na_pairs_direct_kernel[grid](*args, **kw)
        return
    U.na_pairs_kernel[grid](
        *args,
        **_boxes(tq, g.key_box(bk)),
        BLOCK_D=min(bd, dim_block(a.shape[-1])),
        KKP=_slots_pow2(g) if path == HALO_ROWS else _FILL_SLOTS,
        GATHER=path == HALO_ROWS,
        EXACT=lc.exact,
        PREC=lc.prec,
        **common,
    )


def _d_chunks(d: int, block: int, floor: int = 16) -> tuple[int, int]:
    """(block, chunks) over an output's channels, the block a power of two no wider than needed."""
    block = min(block, max(floor, pow2_at_least(d)))
    return block, -(-d // block)


def _halo_args(g: Geometry, lc: Launch, head_dim: int) -> tuple:
    """The halo kernels' box constexprs, channel block and chunk count, and the shared keywords."""
    bq, bk, bd = _halo_blocks(g, lc, head_dim)
    tq, tk = g.query_box(bq), g.key_box(bk)
    block_d, chunks = _d_chunks(head_dim, bd if lc.exact else 1 << 30)  # tensor cores: all channels at once
    kw = {
        **_boxes(tq, tk),
        "BLOCK_D": block_d,
        "KKP": _slots_pow2(g),
        "GATHER": _halo_path(g, lc, head_dim) == HALO_ROWS,
    }
    return tq, tk, chunks, {**kw, **g.causal_args(), **lc.kernel_args()}


def weighted_sum(w, b, out, g: Geometry, lc: Launch) -> None:
    """``out_i = sum_t w[i, t] b_{n(i,t)}``."""
    if out.numel() == 0:
        return
    w3, b3, o3 = _as3(w), _as3(b), _as3(out)
    args = (w3, b3, o3, _strides(w3), _strides(b3), _strides(o3), *g.axis_args())
    path = _path(g, lc, b.shape[-1])
    if path == BAND:
        band = _band(g, lc, b.shape[-1], producer=False)
        kw = band.kernel_args(g, lc, b.shape[-1])
        UB.na_gather_band_kernel[band.grid(g)](*args, band.nt[1], band.nt[2], g.groups, g.heads, b.shape[-1], **kw)
        return
    if path == DIRECT:
        bq, _bq_qk, bd = _direct_blocks(g, lc, b.shape[-1])
        tq = g.query_box(bq)
        nt = _tiles(g.nmax, tq)
        block_d, chunks = _d_chunks(b.shape[-1], bd, floor=1)
        grid = (nt[0] * nt[1] * nt[2] * g.groups, chunks, g.batch * g.heads)
        UD.na_gather_direct_kernel[grid](
            *args, nt[1], nt[2], g.groups, g.heads, b.shape[-1], **g.causal_args(), FULL=g.full,
            T=tuple(tq), BLOCK_D=block_d, EVEN_D=b.shape[-1] % block_d == 0, ACC=lc.acc,
            num_warps=lc.warps,
        )  # fmt: skip
        return
    tq, _tk, chunks, kw = _halo_args(g, lc, b.shape[-1])
    nt = _tiles(g.nmax, tq)
    grid = (nt[0] * nt[1] * nt[2] * g.groups, chunks, g.batch * g.heads)
    U.na_gather_kernel[grid](*args, nt[1], nt[2], g.groups, g.heads, b.shape[-1], **kw)


def inverse_sum(w, a, out, g: Geometry, lc: Launch) -> None:
    """``out_j = sum_{(i,t): n(i,t)=j} w[i, t] a_i`` (per key tile over its inverse neighborhood)."""
    if out.numel() == 0:
        return
    w3, a3, o3 = _as3(w), _as3(a), _as3(out)
    _tq, tk, chunks, kw = _halo_args(g, lc, a.shape[-1])
    nk = _tiles(g.nmax, tk)
    grid = (nk[0] * nk[1] * nk[2] * g.groups, chunks, g.batch * g.heads)
    U.na_scatter_kernel[grid](
        w3, a3, o3, _strides(w3), _strides(a3), _strides(o3), *g.axis_args(),
        nk[1], nk[2], g.groups, g.heads, a.shape[-1], max(g.nmax).bit_length() + 1, **kw,
    )  # fmt: skip


def rpb_grad(w, rpb, g: Geometry, lc: Launch) -> torch.Tensor:
    """Sum of ``w`` over batch and queries per relative position, in rpb's shape and dtype."""
    acc_dtype = torch.float64 if rpb.dtype == torch.float64 else torch.float32
    drpb = torch.zeros(rpb.shape, dtype=acc_dtype, device=rpb.device)
    if w.numel() > 0:
        w3 = _as3(w)
        U.na_rpb_grad_kernel[(drpb[0].numel(), g.heads)](
            w3, drpb, _strides(w3), *g.axis_args(), g.batch, BLOCK_T=256, ACC=lc.acc
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
