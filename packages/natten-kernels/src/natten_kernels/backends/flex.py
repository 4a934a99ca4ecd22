"""The FlexAttention fused backend: torch's ``flex_attention`` with a neighborhood BlockMask.

The neighborhood comes from the one window rule (:func:`natten_kernels.window.window`) through
per-token lookup tables; nothing here restates the rule in torch ops. Per spatial axis of length
``L`` and dilation ``d``, index ``i`` (group ``g = i % d``, group-local ``p = i // d``) gets

* ``rank = g * L + p`` (group-major: the groups are disjoint bands of width ``L``),
* ``[first, last)`` = ``g * L + window(p, n_g, k, s, causal)`` (its keys' ranks),

so key ``j`` is in query ``i``'s window exactly when ``first[i] <= rank[j] < last[i]`` on every
axis (group-local indices and window bounds lie in ``[0, L]``, so the bands of two groups never
overlap), and the relative position of the bias is ``rank[j] - rank[i] = (j - i) / d``.
``mask_mod`` and ``score_mod`` only index these tables.

Tokens are permuted into tiles where that helps: when a box of :data:`BLOCK` tokens (powers of two
per axis) divides every axis, each Flex block of ``BLOCK`` consecutive tokens is one spatial box
(the box of best tile efficiency), so the BlockMask skips as many pairs as natten's own tiles do.
Otherwise (and in 1D, already tiled) tokens stay in row-major order. Exact either way.

Devices:

* CUDA: ``torch.compile(flex_attention)`` (compiled once per process): Flex's Triton kernels, or,
  with ``config = [FLASH]`` and FlashAttention-4 (``flash_attn.cute``) installed, its FLASH (CuTe
  DSL) kernels. Head dims below 16 (Flex's Triton minimum) are zero-padded to 16, which changes no
  logit and no output.
* CPU: torch 2.13 compiles Flex on the CPU for inference only, without the LSE and without
  gradients, and the public ``flex_attention`` refuses CPU tensors that require grad. The CPU path
  therefore calls the ``flex_attention`` higher-order operator (what the public function runs) in
  eager mode: torch's reference implementation of Flex's semantics, exact, with gradients for
  q/k/v and the bias, but dense: ``O(B * H * N^2)`` memory and time. It is for correctness
  (CI runs it), not speed.

Additional keys/values: Flex attends the neighborhood, then :func:`natten_kernels.additional_kv.merge`
adds the extra tokens (the neighborhood output is rounded to the input dtype once before the merge).

Backward: recompute the forward under autograd with detached leaves and differentiate ``(out, lse)``
against ``(grad_out, grad_lse)``: exact and simple, at the cost of one extra forward per backward.

Non-finite values: Flex multiplies the zero weights of masked pairs by their values, so a NaN or inf
in one key or value reaches every query of its Flex block (CUDA) or of its (batch, head) (the dense
CPU path), not only the queries whose window holds it as in the reference (docs/semantics.md).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import typing
from dataclasses import dataclass

import torch
from torch import Tensor

from natten_kernels import additional_kv
from natten_kernels.backends.base import FLOAT_DTYPES, Backend, TuningInfo
from natten_kernels.backends.triton import TENSOR_CORE_CUDA
from natten_kernels.backends.triton import unavailable_reason as triton_unavailable_reason
from natten_kernels.ops.spec import bind
from natten_kernels.window import group_lengths, window

BLOCK = 128  # Flex's block (both query and key), tokens
MIN_CUDA_HEAD_DIM = 16  # Flex's Triton kernels (tl.dot) need head dims >= 16: smaller ones are padded
MAX_CUDA_HEAD_DIM = 256
TRITON, FLASH = 0, 1  # config[0]: Flex's kernel on CUDA
_MASK_CHUNK = 1 << 24  # (query, key) pairs evaluated at once while building a BlockMask
_RECOMPILE_LIMIT = 1024  # static shapes: every problem shape (and variant) is one compile of Flex


# ---- geometry: tiles, tables, mask -------------------------------------------------------------------


def tile_box(spatial, kernel_size, dilation, stride, is_causal, block: int = BLOCK) -> tuple[int, ...] | None:
    """The box of ``block`` tokens (powers of two per axis) that divides every axis and wastes the
    fewest (query, key) pairs as Flex's query and key block; None in 1D (already tiled) or when no
    box divides the axes."""
    from natten_kernels.triton.tiling import tile_efficiency  # pure Python, no triton

    rank = len(spatial)
    if rank == 1:
        return None
    pows = [[1 << e for e in range(block.bit_length()) if n % (1 << e) == 0] for n in spatial]
    boxes = [b for b in itertools.product(*pows) if math.prod(b) == block]
    pad = (1,) * (3 - rank)

    def efficiency(box):
        return tile_efficiency(spatial, kernel_size, dilation, stride, is_causal, pad + box, pad + box)

    return max(boxes, key=efficiency, default=None)


def to_tiles(x: Tensor, spatial, box) -> Tensor:
    """``[B, *spatial, H, E]`` -> ``[B, H, N, E]`` with tokens in tile order (row-major tiles of
    ``box``, row-major inside each), or row-major order when ``box`` is None."""
    b, h, e = x.shape[0], x.shape[-2], x.shape[-1]
    rank = len(spatial)
    if box is None:
        return x.reshape(b, -1, h, e).transpose(1, 2).contiguous()
    split = [v for n, t in zip(spatial, box) for v in (n // t, t)]
    order = [0, 2 * rank + 1, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2), 2 * rank + 2]
    return x.reshape(b, *split, h, e).permute(*order).reshape(b, h, -1, e).contiguous()


def from_tiles(y: Tensor, spatial, box) -> Tensor:
    """Inverse of :func:`to_tiles`: ``[B, H, N, E]`` -> ``[B, *spatial, H, E]``."""
    b, h, e = y.shape[0], y.shape[1], y.shape[-1]
    rank = len(spatial)
    if box is None:
        return y.transpose(1, 2).reshape(b, *spatial, h, e)
    grid = [n // t for n, t in zip(spatial, box)]
    order = [0, *(v for a in range(rank) for v in (2 + a, 2 + rank + a)), 1, 2 + 2 * rank]
    return y.reshape(b, h, *grid, *box, e).permute(*order).reshape(b, *spatial, h, e)


def axis_table(length: int, kernel_size: int, dilation: int, stride: int, is_causal: bool) -> Tensor:
    """``[length, 3]``: each index's ``(rank, first, last)`` (module docstring), from the window rule;
    int32 (int64 when ranks reach 2^31)."""
    lengths = group_lengths(length, dilation)
    rows = []
    for i in range(length):
        g, p = i % dilation, i // dilation
        start, end = window(p, lengths[g], kernel_size, stride, is_causal)
        rows.append((g * length + p, g * length + start, g * length + end))
    return torch.tensor(rows, dtype=torch.int32 if dilation * length < 2**31 else torch.int64)


def token_tables(spatial, kernel_size, dilation, stride, is_causal, box, device) -> tuple[Tensor, ...]:
    """Per token in Flex's order: ``(rank, first, last)`` of axis 0, then of axis 1, ...; ``3 * rank``
    contiguous integer ``[N]`` tensors on ``device``."""
    rank = len(spatial)
    per_axis = []
    for a, params in enumerate(zip(spatial, kernel_size, dilation, stride, is_causal)):
        shape = [1] * rank + [3]
        shape[a] = spatial[a]
        per_axis.append(axis_table(*params).reshape(shape).expand(*spatial, 3))
    grid = torch.cat(per_axis, dim=-1)  # [*spatial, 3 * rank], promoted to the widest index dtype
    ordered = to_tiles(grid.reshape(1, *spatial, 1, 3 * rank), spatial, box)[0, 0]  # [N, 3 * rank]
    return tuple(ordered[:, c].contiguous().to(device) for c in range(3 * rank))


def make_mask_mod(tables: tuple[Tensor, ...]):
    """Flex ``mask_mod(b, h, q_idx, kv_idx)``: key inside the query's window on every axis.
    One code object for every problem (only the captured tables differ), so Flex compiles once."""

    def mask_mod(b, h, q_idx, kv_idx):
        inside = None
        for a in range(0, len(tables), 3):
            rank, first, last = tables[a], tables[a + 1], tables[a + 2]
            key = rank[kv_idx]
            axis = (key >= first[q_idx]) & (key < last[q_idx])
            inside = axis if inside is None else inside & axis
        return inside

    return mask_mod


def make_score_mod(tables: tuple[Tensor, ...]):
    """``score_mod(score, b, h, q_idx, kv_idx, rpb)``: adds ``rpb[h, (k-1) + (key-query)/d, ...]``;
    ``rpb [H, 2k-1, ...]`` is an explicit argument so that autograd reaches it on every path."""

    def score_mod(score, b, h, q_idx, kv_idx, rpb):
        index = []
        for a in range(0, len(tables), 3):
            rank = tables[a]
            size = rpb.shape[1 + a // 3]  # 2k - 1
            rel = rank[kv_idx] - rank[q_idx] + (size - 1) // 2
            # masked-out pairs only: keep their reads in bounds (torch.where: FLASH's CuTe DSL lowering
            # has no clamp/minimum/maximum)
            index.append(torch.where(rel < 0, 0, torch.where(rel > size - 1, size - 1, rel)))
        return score + rpb[(h, *index)]

    return score_mod


def build_block_mask(mask_mod, tokens: int, device, block: int = BLOCK):
    """A Flex BlockMask from ``mask_mod`` evaluated on every (query, key) pair, a few query blocks at
    a time (bounded memory, nothing compiled): blocks with every pair inside are "full" (no mask_mod
    in the kernel), blocks with some are "partial", the rest are skipped. Blocks past the last token
    are never full, as in torch's create_block_mask."""
    from torch.nn.attention.flex_attention import BlockMask

    nb = -(-tokens // block)
    keys = torch.arange(tokens, device=device, dtype=torch.int32)
    rows = max(block, _MASK_CHUNK // max(tokens, 1) // block * block)
    partial, full = [], []
    for q0 in range(0, tokens, rows):
        queries = torch.arange(q0, min(q0 + rows, tokens), device=device, dtype=torch.int32)
        inside = mask_mod(None, None, queries[:, None], keys[None, :])
        nq = -(-queries.numel() // block)
        padded = torch.zeros(nq * block, nb * block, dtype=torch.bool, device=device)
        padded[: queries.numel(), :tokens] = inside
        padded = padded.reshape(nq, block, nb, block)
        some, every = padded.any(dim=(1, 3)), padded.all(dim=(1, 3))
        partial.append(some & ~every)
        full.append(every)

    def indices(blocks):
        blocks = torch.cat(blocks)[None, None]  # [1, 1, nq, nb]
        order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True)  # listed blocks first
        return blocks.sum(-1, dtype=torch.int32), order.to(torch.int32)

    return BlockMask.from_kv_blocks(
        *indices(partial), *indices(full), BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(tokens, tokens)
    )


@dataclass(frozen=True, eq=False)
class Geometry:
    """What Flex needs for one neighborhood: token order, tables, mods and BlockMask."""

    box: tuple[int, ...] | None
    tables: tuple[Tensor, ...]
    mask_mod: typing.Callable
    score_mod: typing.Callable
    block_mask: object


@functools.lru_cache(maxsize=32)
def geometry(spatial, kernel_size, dilation, stride, is_causal, device: str) -> Geometry:
    """Cached per (spatial, kernel_size, dilation, stride, is_causal, device); the tile box follows
    from them. Arguments are tuples (hashable)."""
    box = tile_box(spatial, kernel_size, dilation, stride, is_causal)
    tables = token_tables(spatial, kernel_size, dilation, stride, is_causal, box, device)
    mask_mod = make_mask_mod(tables)
    bm = build_block_mask(mask_mod, math.prod(spatial), device)
    return Geometry(box, tables, mask_mod, make_score_mod(tables), bm)


# ---- Flex calls --------------------------------------------------------------------------------------


def _no_bias(score, b, h, q_idx, kv_idx):
    return score


@functools.cache
def _compiled(kernel: int):
    from torch.nn.attention.flex_attention import flex_attention

    # Static shapes: FLASH cannot inline symbolic shapes into its CuTe DSL template, and Flex's Triton
    # templates found no valid config for symbolic shapes with GQA (H200, torch 2.11): one compile per shape
    return torch.compile(flex_attention, dynamic=False)


def _dynamo_limits() -> dict:
    """Room for one compile per problem shape, and an error instead of dynamo's silent fallback to
    eager Flex (dense: memory grows with tokens^2) should that room run out."""
    cfg = torch._dynamo.config
    limits = {
        "recompile_limit": max(_RECOMPILE_LIMIT, cfg.recompile_limit),
        "accumulated_recompile_limit": max(_RECOMPILE_LIMIT, getattr(cfg, "accumulated_recompile_limit", 0)),
        "fail_on_recompile_limit_hit": not cfg.suppress_errors,  # the two flags exclude each other
    }
    return {k: v for k, v in limits.items() if hasattr(cfg, k)}


def _kernel_options(kernel: int) -> dict:
    # Flex's main Triton kernel, never its decoding kernel (chosen for fewer than 128 queries by default),
    # which found no valid config for GQA with a block mask (H200, torch 2.11)
    return {"BACKEND": "TRITON" if kernel == TRITON else "FLASH"}


def _attend_cuda(q, k, v, geo, rpb, scale, kernel):
    """Compiled Flex: ``(out [B, H, N, Dv] in q's dtype, lse [B, H, N] float32, natural log)``."""
    from torch.nn.attention.flex_attention import AuxRequest

    dv = v.shape[-1]
    if q.shape[-1] < MIN_CUDA_HEAD_DIM:  # zero columns add nothing to q.k
        pad = MIN_CUDA_HEAD_DIM - q.shape[-1]
        q, k = (torch.nn.functional.pad(x, (0, pad)) for x in (q, k))
    if dv < MIN_CUDA_HEAD_DIM:  # zero columns of v give zero output columns, cut below
        v = torch.nn.functional.pad(v, (0, MIN_CUDA_HEAD_DIM - dv))
    score_mod = None
    if rpb is not None:
        mod = geo.score_mod
        bias = rpb.to(torch.promote_types(rpb.dtype, torch.float32))  # its gradient sums by atomics: in float32

        def score_mod(score, b, h, q_idx, kv_idx):
            return mod(score, b, h, q_idx, kv_idx, bias)

    def attend(options):
        with torch._dynamo.config.patch(**_dynamo_limits()):
            return _compiled(kernel)(
                q,
                k,
                v,
                score_mod=score_mod,
                block_mask=geo.block_mask,
                scale=scale,
                enable_gqa=q.shape[1] != k.shape[1],
                kernel_options=options,
                return_aux=AuxRequest(lse=True),
            )

    options = _kernel_options(kernel)
    try:
        out, aux = attend(options)
    except Exception as e:  # Flex's default Triton configs can exceed shared memory (H200: 249 KB > 227 KB)
        if kernel != TRITON or "out of resource" not in str(e):
            raise
        out, aux = attend({**options, "num_stages": 1})
    return out[..., :dv], aux.lse


def _attend_cpu(q, k, v, geo, rpb, scale):
    """Flex's eager implementation (the higher-order op): ``(out in q's dtype, lse natural log,
    float64 for float64 inputs else float32)``; differentiable in q, k, v and rpb."""
    from torch._higher_order_ops.flex_attention import flex_attention as flex_op

    options = {"BACKEND": "AUTO", "OUTPUT_LOGSUMEXP": True, "OUTPUT_MAX": False}
    score_mod, buffers = (_no_bias, ()) if rpb is None else (geo.score_mod, (rpb,))
    out, lse2, _max = flex_op(q, k, v, score_mod, geo.block_mask.as_tuple(), scale, options, buffers, ())
    return out, lse2 * math.log(2.0)  # Flex keeps base-2 statistics


_INPUTS = ("q", "k", "v", "rpb", "additional_keys", "additional_values")  # differentiable, in the op's order


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _kernel(a) -> int:
    """Flex's kernel from the call's ``config`` (bound arguments ``a``), after checking the call."""
    spatial = a.q.shape[1:-2]
    for name in ("kernel_size", "dilation", "stride", "is_causal"):
        if len(getattr(a, name)) != len(spatial):
            raise ValueError(
                f"{name} must have one entry per spatial axis of q {list(a.q.shape)} ({len(spatial)}), "
                f"got {list(getattr(a, name))}"
            )
    if list(a.query_offset):  # natten.functional pads the queries for backends without "query_box"
        raise ValueError(
            f"the flex backend takes no query_offset (queries and keys share one grid), got {a.query_offset}"
        )
    config = list(a.config)
    if config not in ([], [TRITON], [FLASH]):
        raise ValueError(f"flex config must be [], [{TRITON}] (Triton) or [{FLASH}] (FLASH), got {config}")
    if config == [FLASH] and (a.q.device.type != "cuda" or not flash_available()):
        raise ValueError("flex config [1] (FLASH) needs a CUDA device and FlashAttention-4 (flash_attn.cute)")
    return config[0] if config else TRITON


def _forward(a, t: dict, kernel: int) -> tuple[Tensor, Tensor]:
    """Differentiable forward of the tensors ``t`` (by name, heads-last; absent ones None) with the
    call's parameters ``a``: ``out`` in q's dtype, ``lse`` float32 (float64)."""
    q = t["q"]
    spatial = tuple(q.shape[1:-2])
    geo = geometry(
        spatial,
        tuple(int(x) for x in a.kernel_size),
        tuple(int(x) for x in a.dilation),
        tuple(int(x) for x in a.stride),
        tuple(bool(x) for x in a.is_causal),
        str(q.device),
    )
    scale = float(a.scale)
    qt, kt, vt = (to_tiles(t[n], spatial, geo.box) for n in "qkv")
    if q.device.type == "cpu":
        out, lse = _attend_cpu(qt, kt, vt, geo, t["rpb"], scale)
    else:
        out, lse = _attend_cuda(qt, kt, vt, geo, t["rpb"], scale, kernel)
    out = from_tiles(out, spatial, geo.box)
    lse = from_tiles(lse[..., None], spatial, geo.box)[..., 0].to(_lse_dtype(q))
    if additional_kv.present(t["additional_keys"]):
        out, lse = additional_kv.merge(out, lse, q, t["additional_keys"], t["additional_values"], scale)
    return out, lse


def forward(*args, **kwargs) -> tuple[Tensor, Tensor]:
    """``natten::na_fused_forward`` by Flex, same arguments (ops/spec.py): ``(out [B, *S, H, Dv]`` in
    q's dtype, ``lse [B, *S, H]`` float32, float64 for float64 inputs).

    ``q [B, *S, H, D]``, ``k [B, *S, Hkv, D]``, ``v [B, *S, Hkv, Dv]`` with ``Hkv | H``;
    ``rpb [H, 2k-1, ...]`` or None; ``additional_keys``/``additional_values`` ``[B, N_add, Hkv, D / Dv]``
    or None; ``kernel_size``/``dilation``/``stride``/``is_causal`` one entry per spatial axis; ``scale``
    any finite float; ``config`` ``[]`` or ``[0]`` (Triton on CUDA) or ``[1]`` (FLASH on CUDA).
    """
    a = bind("na_fused_forward", args, kwargs)
    kernel = _kernel(a)
    q, v = a.q, a.v
    if q.numel() == 0 or v.numel() == 0:
        return q.new_zeros((*q.shape[:-1], v.shape[-1])), q.new_zeros(q.shape[:-1], dtype=_lse_dtype(q))
    with torch.no_grad():
        return _forward(a, {n: getattr(a, n) for n in _INPUTS}, kernel)


def backward(*args, **kwargs) -> tuple[Tensor, ...]:
    """``natten::na_fused_backward`` by Flex, same arguments (ops/spec.py): ``(dq, dk, dv, drpb,
    d_additional_keys, d_additional_values)``, each in its input's dtype and shape,
    ``q.new_empty(0)`` for an absent input; ``grad_lse [B, *S, H]`` may be None.

    Recomputes the forward under autograd (``out`` and ``lse`` are not read) and differentiates it:
    one extra forward. FLASH's backward has no gradient for the LSE nor for the bias, so with
    ``grad_lse`` or ``rpb`` the FLASH config runs Triton's backward.
    """
    a = bind("na_fused_backward", args, kwargs)
    kernel = _kernel(a)
    if kernel == FLASH and (a.grad_lse is not None or a.rpb is not None):
        kernel = TRITON
    present = {n: getattr(a, n) for n in _INPUTS if getattr(a, n) is not None}
    if not additional_kv.present(a.additional_keys):
        present.pop("additional_keys", None)
        present.pop("additional_values", None)
    if a.q.numel() == 0 or a.v.numel() == 0:
        grads = {n: torch.zeros_like(x, memory_format=torch.contiguous_format) for n, x in present.items()}
    else:
        with torch.enable_grad():
            leaves = {n: x.detach().requires_grad_(True) for n, x in present.items()}
            out, lse = _forward(a, {n: leaves.get(n) for n in _INPUTS}, kernel)
            outputs, upstream = [out], [a.grad_out.to(out.dtype)]
            if a.grad_lse is not None:
                outputs.append(lse)
                upstream.append(a.grad_lse.to(lse.dtype))
            got = torch.autograd.grad(outputs, list(leaves.values()), upstream, allow_unused=True)
        grads = {
            n: (torch.zeros_like(x) if g is None else g).to(x.dtype).contiguous()
            for (n, x), g in zip(present.items(), got)
        }
    empty = a.q.new_empty(0)
    return tuple(grads.get(n, empty) for n in _INPUTS)


# ---- availability and configurations -----------------------------------------------------------------


@functools.cache
def flash_available() -> bool:
    """Whether Flex's FLASH backend can run: CUDA, FlashAttention-4's CuTe DSL package and a torch
    whose Flex knows ``BACKEND='FLASH'``."""
    if not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        from torch.nn.attention import flex_attention as fa

        return "FLASH" in typing.get_args(getattr(fa, "_Backend", None)) and (
            importlib.util.find_spec("flash_attn.cute") is not None
        )
    except (ImportError, ValueError):
        return False


def _flex_missing() -> str | None:
    try:
        from torch.nn.attention.flex_attention import AuxRequest, BlockMask, flex_attention  # noqa: F401
    except ImportError as e:
        return f"torch {torch.__version__} has no usable FlexAttention ({e})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python, and Flex needs it"
    return None


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """None when the CUDA path can run in this process, else why not: what natten's Triton kernels
    need (a CUDA device of compute capability >= 8.0, triton for torch.compile) and Flex."""
    return triton_unavailable_reason() or _flex_missing()


@functools.cache
def cpu_unavailable_reason() -> str | None:
    """None when the CPU path runs here: a tiny forward and backward through Flex's eager op (a
    private entry point of torch, so it is tried rather than assumed)."""
    why = _flex_missing()
    if why:
        return why
    try:
        x = torch.randn(1, 4, 1, 2, dtype=torch.float64)
        args = (None, None, None, [3], [1], [1], [False], 1.0)
        out, lse = forward(x, x, x, *args)
        backward(out, x, x, x, out, lse, lse, *args)
    except Exception as e:  # any failure means the path is unusable here; say which
        return f"Flex's eager operator failed on the CPU with torch {torch.__version__}: {type(e).__name__}: {e}"
    return None


def unavailable_reason() -> str | None:
    """None when Flex runs on some device of this process (CUDA or CPU), else both reasons."""
    cuda, cpu = cuda_unavailable_reason(), cpu_unavailable_reason()
    return None if cuda is None or cpu is None else f"CUDA: {cuda}; CPU: {cpu}"


def forward_configs(info: TuningInfo) -> list[list[int]]:
    """``[]`` = Flex's default (Triton); ``[1]`` = FLASH where FlashAttention-4 is installed."""
    if flash_available() and info.head_dim % 16 == 0 and info.head_dim <= 128:
        return [[], [FLASH]]
    return [[]]


def backward_configs(info: TuningInfo) -> list[list[int]]:
    """As :func:`forward_configs` (FLASH's backward covers problems without bias and LSE gradients)."""
    return forward_configs(info)


_FEATURES = frozenset({"causal", "dilation", "stride", "rpb", "additional_kv", "gqa", "backward"})
# Both backends run natten::flex_na_fused_forward/backward (schemas from ops/spec.py): these functions,
# which pick the CUDA or the CPU path by the tensors' device.
_OPS = dict(
    op_prefix="flex_",
    kernels={
        "na_fused_forward": "natten_kernels.backends.flex:forward",
        "na_fused_backward": "natten_kernels.backends.flex:backward",
    },
)

# Compiled Flex on CUDA: Triton kernels (FLASH on request). No forward-mode AD; the bias gradient is
# accumulated by atomics (q/k/v gradients are not), so deterministic backward is not declared.
FLEX = Backend(
    name="flex",
    families=frozenset({"fused"}),
    features=_FEATURES,
    max_head_dim=MAX_CUDA_HEAD_DIM,
    unavailable_reason=cuda_unavailable_reason,
    forward_configs=forward_configs,
    backward_configs=backward_configs,
    **_OPS,
    **TENSOR_CORE_CUDA,  # tensor-core matmuls (tl.dot): off under disable_gemm_na() like triton's
)

# Flex's eager implementation on the CPU: dense, exact, every float dtype and head dim, deterministic.
FLEX_CPU = Backend(
    name="flex-cpu",
    families=frozenset({"fused"}),
    devices=frozenset({"cpu"}),
    dtypes=FLOAT_DTYPES,
    features=_FEATURES | {"deterministic_backward"},
    unavailable_reason=cpu_unavailable_reason,
    autotune=False,  # dense: timing it on a large problem could exhaust memory
    **_OPS,
)
