"""The launchers' config grammar: a config list (``[]``, partial or whole) resolved into typed
forward / backward configs for one problem, the constexprs they imply, and the tile boxes.

Forward ``[block_q, block_k, num_warps, num_stages(, variant(, maxnreg))]``; backward ``[resident,
streamed, num_warps, num_stages(, variant(, dq: block_q, block_k, warps, stages(, tma)))]`` (the
meaning of each entry: docs/gpu.md, "Configurations").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from natten_kernels.triton.layout import dim_block, geometry, precision
from natten_kernels.triton.tiling import GROUP_VARIANT, choose_config, fit_shared_memory, tile_shapes


class ForwardConfig(NamedTuple):
    block_q: int
    block_k: int
    num_warps: int
    num_stages: int
    variant: int  # 0 pointer loads, 1 TMA, 2 the whole-group kernel
    maxnreg: int  # 0: no register cap


class BackwardConfig(NamedTuple):
    resident: int  # the dk/dv pass's key tile
    streamed: int  # its query tiles
    num_warps: int
    num_stages: int
    variant: int  # 0 deterministic, 1 KV-parallel
    dq_block_q: int
    dq_block_k: int
    dq_warps: int
    dq_stages: int
    dq_tma: int


@functools.lru_cache(maxsize=8)
def smem_limit(device_index: int) -> int:
    """Shared memory a config may plan for: the device's per-block opt-in size, less a margin."""
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", 96 * 1024)) - 2048


def parse_config(
    config, head_dim, dtype, problem=None, backward=False, device=None, queries=None
) -> ForwardConfig | BackwardConfig:
    """A :class:`ForwardConfig`, or a :class:`BackwardConfig` (its dq pass's own ``block_q, block_k,
    num_warps, num_stages, tma`` last). ``[]`` is the default of the problem ``problem = (spatial,
    kernel_size, dilation, stride, is_causal)``; in a given config, ``0`` block, warp or stage entries
    take that default's value and a missing variant or register cap is 0; a backward config without
    the dq entries runs its dq pass with its own first four. ``device``: shrink to its shared memory;
    ``queries``: a box of queries (tiling.choose_config)."""
    lengths = (0, 4, 5, 9, 10) if backward else (0, 4, 5, 6)
    if len(config) not in lengths or any(int(c) < 0 for c in config):
        what = "[block_q, block_k, num_warps, num_stages(, variant(, maxnreg))]"
        if backward:
            what = (
                "[resident, streamed, num_warps, num_stages(, variant(, dq: block_q, block_k, warps, stages(, tma)))]"
            )
        raise ValueError(f"triton config must be {what}, got {list(config)}")
    if backward and len(config) > 5:
        main = parse_config(list(config[:5]), head_dim, dtype, problem, True, device, queries)[:5]
        return BackwardConfig(*main, *_dq_part(config[5:], main, head_dim, dtype, device))
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
        geo = tuple(tuple(x) for x in problem) if problem is not None else ((1,), (1,), (1,), (1,), (False,))
        default = choose_config(head_dim, elem, *geo, backward=backward, kv_parallel=bool(variant), queries=queries)
        cfg = [c or dflt for c, dflt in zip(cfg[:4], default)]
        variant = default[4] if variant is None else variant
        if maxnreg is None:
            maxnreg = default[5] if len(default) == 6 and not backward else 0
        if not config:  # the whole default: its dq pass too
            dq_default = tuple(default[5:])
    cfg = cfg[:4]
    _check_blocks(cfg, "")
    if device is not None and device.type == "cuda" and (backward or variant != GROUP_VARIANT):
        cfg = fit_shared_memory(cfg, head_dim, elem, backward, smem_limit(device.index or 0))
    if backward:
        return BackwardConfig(*cfg, variant, *_dq_part(dq_default, cfg, head_dim, dtype, device))
    return ForwardConfig(*cfg, variant, maxnreg)


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
        cfg[:4] = fit_shared_memory(cfg[:4], head_dim, elem, True, smem_limit(device.index or 0))
    return tuple(cfg)


def launch_params(q, k3, rank, kernel_size, dilation, stride, is_causal, config, d, dv, backward, queries=None):
    """Geometry (of the key grid ``k3``), the resolved config and the constexprs of one launch (query
    and key boxes excepted: :func:`boxes` adds them, as the backward's two passes swap the blocks'
    roles). ``queries``: the queries are that box of the grid (``(offset, extent)``, rank 3)."""
    ks, dl, st, cz, L, nmax = geometry(k3, kernel_size, dilation, stride, is_causal)
    problem = (tuple(k3.shape[4 - rank : 4]), kernel_size, dilation, stride, is_causal)
    box = None if queries is None else tuple(tuple(x[3 - rank :]) for x in queries)
    cfg = parse_config(config, max(d, dv), q.dtype, problem, backward, q.device, box)
    constexprs = dict(
        RANK=rank,
        C=tuple(cz),
        HEAD_DIM=d,
        HEAD_DIM_V=dv,
        BLOCK_D=dim_block(d),
        BLOCK_DV=dim_block(dv),
        PREC=precision(q.dtype),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if not backward and cfg.maxnreg:
        constexprs["maxnreg"] = cfg.maxnreg
    return (ks, dl, st, L, nmax, cz), cfg, constexprs


def boxes(geo, query_block, key_block, search=True, queries=None):
    """(query box, key box, their constexprs) for two block sizes (``search``, ``queries``: see
    tile_shapes)."""
    ks, dl, st, L, _nmax, cz = geo
    tq, tk = tile_shapes(ks, dl, st, L, query_block, key_block, cz, search, queries)
    return tq, tk, dict(T=tuple(tq), KB=tuple(tk))
