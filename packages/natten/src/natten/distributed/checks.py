"""Argument checks of the distributed ops, in two steps that can never leave a rank waiting.

1. Local: what one rank can check alone (types, dims, dtypes, devices, heads, rpb and additional KV
   shapes, the sharding arguments), with natten's own fused-op checks.
2. One all-gather of a small int64 vector per rank (metadata only): its local spatial shape, every
   argument that must agree across ranks, and whether step 1 failed. Each rank then runs the same
   checks on the same gathered data (ranks agree, shards tile the grid, every rank holds a token on
   each sharded axis, the assembled global problem passes natten's checks), so all ranks raise or
   none does. A rank whose step 1 failed raises its own error; the others say which rank failed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch
import torch.distributed as dist

from natten.distributed.plan import Layout, make_layout
from natten.functional.validation import FLOAT_DTYPES, FusedShapes, NAParams, check_fused

METHODS = ("halo", "heads", "auto")
_AXES = 3  # per-axis fields are padded to the largest spatial rank
_GRADS = "requires_grad of query, key, value, rpb, additional_keys and torch.is_grad_enabled()"


def resolve_group(group):
    """``group``, or the default group for None; this process must belong to it."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "natten.distributed needs an initialized default process group: call "
            "torch.distributed.init_process_group first"
        )
    if group is None:
        return dist.group.WORLD
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed.ProcessGroup or None; got {type(group).__name__}")
    if dist.get_rank(group) < 0:
        raise ValueError("group must contain this process; got a process group this rank is not a member of")
    return group


def check_sharding(sharded_axes, grid, method, rank_dims: int, world: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(sharded_axes, grid)`` normalized: spatial axis indices (0 = first spatial axis) and the ranks
    along each of them (row-major over the group's ranks)."""
    if isinstance(method, bool) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    sharded_axes = 0 if sharded_axes is None else sharded_axes
    axes = (sharded_axes,) if isinstance(sharded_axes, int) and not isinstance(sharded_axes, bool) else sharded_axes
    if not isinstance(axes, (tuple, list)) or not axes:
        raise TypeError(f"sharded_axes must be an int or a non-empty tuple of ints; got {sharded_axes!r}")
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"sharded_axes entries must be ints; got {tuple(axes)!r}")
    if any(not 0 <= a < rank_dims for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(
            f"sharded_axes must be distinct spatial axis indices in [0, {rank_dims}) (0 = the first spatial "
            f"axis of [batch, *spatial, heads, head_dim]); got {tuple(axes)}"
        )
    if grid is None:
        if len(axes) > 1:
            raise ValueError(
                f"grid (ranks along each sharded axis, product = world size {world}) must be given when "
                f"sharding several axes; got grid=None with sharded_axes={tuple(axes)}"
            )
        grid = (world,)
    grid = (grid,) if isinstance(grid, int) and not isinstance(grid, bool) else grid
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != len(axes)
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
    ):
        raise ValueError(f"grid must hold one positive int per sharded axis ({len(axes)}); got {grid!r}")
    if math.prod(grid) != world:
        raise ValueError(f"grid must multiply to the group's size {world}; got grid={tuple(grid)}")
    return tuple(axes), tuple(grid)


def _meta(t, spatial=None):
    """A meta tensor shaped like ``t`` (optionally with other spatial sizes); ``t`` itself when it is
    not a plain tensor (natten's checks then raise the TypeError)."""
    if not isinstance(t, torch.Tensor) or t.is_nested:
        return t
    shape = list(t.shape)
    if spatial is not None:
        shape[1 : 1 + len(spatial)] = spatial
    return torch.empty(shape, dtype=t.dtype, device="meta")


def check_local(params: NAParams, query, key, value, rpb, scale, additional_keys, additional_values, sharded_axes):
    """Step 1: everything one rank can check on its own shard."""
    tensors = {"query": query, "key": key, "value": value, "rpb": rpb}
    tensors.update(additional_keys=additional_keys, additional_values=additional_values)
    if isinstance(query, torch.Tensor):
        for name, t in tensors.items():
            if isinstance(t, torch.Tensor) and t.device != query.device:
                raise ValueError(f"{name} must be on the device of query ({query.device}); got {t.device}")
    rank_dims = params.rank
    dims_ok = all(isinstance(t, torch.Tensor) and t.dim() == rank_dims + 3 for t in (query, key, value))
    if dims_ok and not (query.shape[:-2] == key.shape[:-2] == value.shape[:-2]):
        raise ValueError(
            f"query, key and value shards must share batch and spatial axes [batch, *spatial, heads, head_dim]; "
            f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    spatial = None
    if dims_ok:  # a shard may be thinner than a window: only the assembled grid must hold one
        spatial = [
            max(n, k * d) if axis in sharded_axes else n
            for axis, (n, k, d) in enumerate(zip(query.shape[1:-2], params.kernel_size, params.dilation))
        ]
    metas = [_meta(t, spatial) for t in (query, key, value)]
    check_fused(*metas, params, _meta(rpb), scale, _meta(additional_keys), _meta(additional_values))


@dataclass(frozen=True)
class Setup:
    """The checked call: the global layout, this rank, the method to run and the shapes."""

    layout: Layout
    rank: int
    method: str
    shapes: FusedShapes


def _pad(values, fill=0) -> tuple[int, ...]:
    return tuple(int(v) for v in values) + (fill,) * (_AXES - len(values))


def _shared_fields(params, query, key, value, rpb, scale, additional_keys, sharded_axes, grid, method, return_lse):
    """What every rank must agree on, as named int tuples of fixed widths (``_shown`` reads them back)."""
    grads = [t is not None and t.requires_grad for t in (query, key, value, rpb, additional_keys)]
    return [
        ("spatial rank", (params.rank,)),
        ("batch size", (query.shape[0],)),
        ("heads, kv_heads", (query.shape[-2], key.shape[-2])),
        ("head_dim, head_dim_v", (query.shape[-1], value.shape[-1])),
        ("dtype", (FLOAT_DTYPES.index(query.dtype),)),
        ("kernel_size", _pad(params.kernel_size)),
        ("dilation", _pad(params.dilation)),
        ("stride", _pad(params.stride)),
        ("is_causal", _pad(params.is_causal)),
        ("sharded_axes", _pad(sharded_axes, -1)),
        ("grid", _pad(grid)),
        ("method", (METHODS.index(method),)),
        ("scale", (scale is None, struct.unpack("<q", struct.pack("<d", scale or 0.0))[0])),
        ("rpb", (rpb is not None,)),
        ("additional_keys", (-1 if additional_keys is None else additional_keys.shape[1],)),
        (_GRADS, (*grads, torch.is_grad_enabled())),
        ("return_lse", (return_lse,)),
    ]


_WIDTHS = [1, 1, 2, 2, 1, _AXES, _AXES, _AXES, _AXES, _AXES, _AXES, 1, 2, 1, 1, 6, 1]
_LENGTH = 1 + sum(_WIDTHS) + _AXES  # error flag, shared fields, local spatial shape


def _bools(values, rank_dims=None):
    return tuple(bool(v) for v in values[:rank_dims])


# How a gathered field reads as the user passed it (dtype names, unpadded axes, the scale as a float).
_READ = {
    "dtype": lambda v, n: str(FLOAT_DTYPES[v[0]]),
    "method": lambda v, n: METHODS[v[0]],
    "scale": lambda v, n: None if v[0] else struct.unpack("<d", struct.pack("<q", v[1]))[0],
    "sharded_axes": lambda v, n: tuple(a for a in v if a >= 0),  # padded with -1
    "grid": lambda v, n: tuple(g for g in v if g > 0),  # padded with 0
    "kernel_size": lambda v, n: v[:n],
    "dilation": lambda v, n: v[:n],
    "stride": lambda v, n: v[:n],
    "is_causal": _bools,
    "rpb": lambda v, n: "a tensor" if v[0] else None,
    "additional_keys": lambda v, n: None if v[0] < 0 else f"{v[0]} tokens",
    _GRADS: lambda v, n: _bools(v),
    "return_lse": lambda v, n: bool(v[0]),
}


def _shown(name: str, values: tuple[int, ...], rank_dims: int):
    read = _READ.get(name)
    return read(values, rank_dims) if read else values[0] if len(values) == 1 else values


def _gather_device(group, query) -> torch.device:
    if isinstance(query, torch.Tensor) and query.device.type == "cuda":
        return query.device
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_setup(local_error, group, params, tensors: dict, scale, sharded_axes, grid, method, return_lse) -> Setup:
    """Step 2: the all-gather, then the same checks on every rank (see the module docstring)."""
    me, world = dist.get_rank(group), dist.get_world_size(group)
    query, key, value = tensors["query"], tensors["key"], tensors["value"]
    vector = [1] + [0] * (_LENGTH - 1)
    if local_error is None:
        fields = _shared_fields(
            params,
            query,
            key,
            value,
            tensors["rpb"],
            scale,
            tensors["additional_keys"],
            sharded_axes,
            grid,
            method,
            return_lse,
        )
        vector = [0, *(v for _, values in fields for v in values), *_pad(query.shape[1:-2])]
    mine = torch.tensor(vector, dtype=torch.int64, device=_gather_device(group, query))
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    table = torch.stack(everyone).cpu().tolist()
    if local_error is not None:
        raise local_error
    failed = [r for r, row in enumerate(table) if row[0]]
    if failed:
        raise ValueError(
            f"rank(s) {failed} of the process group rejected their inputs (their own errors say why); "
            f"no rank ran the op"
        )
    pos = 1
    for (name, _), width in zip(fields, _WIDTHS):
        values = [tuple(row[pos : pos + width]) for row in table]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank {r}: {_shown(name, v, params.rank)}" for r, v in enumerate(values))
            what = "dtype (of query, key and value)" if name == "dtype" else name
            raise ValueError(f"{what} must be the same on every rank of the group; got {shown}")
        pos += width
    locals_ = [tuple(row[pos : pos + params.rank]) for row in table]
    layout, why = make_layout(locals_, sharded_axes, grid)
    if layout is None:
        shapes = ", ".join(f"rank {r}: {s}" for r, s in enumerate(locals_))
        raise ValueError(
            f"the shards' spatial shapes do not tile the grid {grid} over sharded_axes {sharded_axes}: {why} ({shapes})"
        )
    global_shape = [query.shape[0], *layout.spatial]
    metas = [torch.empty((*global_shape, *t.shape[-2:]), dtype=t.dtype, device="meta") for t in (query, key, value)]
    extra = [_meta(tensors[n]) for n in ("rpb", "additional_keys", "additional_values")]
    try:
        shapes = check_fused(*metas, params, extra[0], scale, *extra[1:])
    except (ValueError, TypeError) as error:  # its shapes are the assembled grid's, which no rank passed
        raise type(error)(
            f"{error} [checked on the grid the shards assemble: spatial {tuple(layout.spatial)}, from "
            f"local shards {', '.join(f'rank {r}: {s}' for r, s in enumerate(locals_))}]"
        ) from None
    return Setup(layout, me, method, shapes)
