"""``na1d/na2d/na3d`` over a token grid sharded across the ranks of a process group.

Each rank passes its shard (``[batch, *local_spatial, heads, head_dim]``); the result is its shard of
the single-process ``natten.functional.na*d`` on the whole grid, exactly, forward and backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from natten import functional as natten_functional
from natten.distributed.accounting import predicted
from natten.distributed.checks import Setup, check_local, check_sharding, gather_setup, resolve_group
from natten.distributed.dtensor import is_dtensor, unwrap
from natten.distributed.halo import HaloExchange
from natten.distributed.head_parallel import HeadAllToAll
from natten.distributed.plan import rank_plan
from natten.distributed.replicated import replicated
from natten.functional.fused import _na as fused_na
from natten.functional.validation import causal_alias, check_bool, normalize_params

_OPS = {1: natten_functional.na1d, 2: natten_functional.na2d, 3: natten_functional.na3d}


def _params_key(params) -> tuple:
    return (params.kernel_size, params.dilation, params.stride, params.is_causal)


def choose_method(setup: Setup, params, batch: int, itemsize: int, lse_itemsize: int = 0) -> str:
    """``halo`` or ``heads`` for ``method="auto"``: the one moving fewer bytes (sent + received) on its
    busiest rank (``lse_itemsize`` > 0: the head-parallel LSE transfer counts too); heads only when
    the group's size divides heads and kv_heads; ties go to halo."""
    world, shapes = setup.layout.world, setup.shapes
    if shapes.heads % world or shapes.kv_heads % world:
        return "halo"
    key = _params_key(params)
    cost = {
        m: max(s + r for s, r in predicted(m, setup.layout, key, batch, shapes, itemsize, lse_itemsize))
        for m in ("halo", "heads")
    }
    return "heads" if cost["heads"] < cost["halo"] else "halo"


@torch.compiler.disable  # pure-Python planning behind a cache: run it, do not trace it, under torch.compile
def _rank_plan(setup, params):
    return rank_plan(setup.layout, _params_key(params), setup.rank)


def _halo(rank_dims, setup, params, group, q, k, v, rpb, scale, add_k, add_v):
    plan = _rank_plan(setup, params)
    k_ext, v_ext = HaloExchange.apply(plan, group, k, v)
    # the owned queries as the box of the extended grid where they sit: only their rows are computed
    return fused_na(
        rank_dims,
        q,
        k_ext,
        v_ext,
        params.kernel_size,
        params.dilation,
        params.is_causal,
        replicated(rpb, group),
        scale,
        replicated(add_k, group),
        replicated(add_v, group),
        params.stride,
        True,
        plan.offset,
    )


def _heads(rank_dims, setup, params, group, q, k, v, rpb, scale, add_k, add_v, return_lse):
    layout, me, world = setup.layout, setup.rank, setup.layout.world
    shapes = setup.shapes
    if shapes.heads % world or shapes.kv_heads % world:
        raise ValueError(
            f"method='heads' needs heads ({shapes.heads}) and kv_heads ({shapes.kv_heads}) divisible by the "
            f"group's size ({world}); use method='halo'"
        )
    h, hk = shapes.heads // world, shapes.kv_heads // world
    q_h, k_h, v_h = HeadAllToAll.apply(True, layout, me, group, "qkv", q, k, v)
    rpb = replicated(rpb, group)
    add_k, add_v = replicated(add_k, group), replicated(add_v, group)
    mine = slice(me * hk, (me + 1) * hk)
    out, lse = _OPS[rank_dims](
        q_h,
        k_h,
        v_h,
        params.kernel_size,
        params.dilation,
        params.is_causal,
        None if rpb is None else rpb[me * h : (me + 1) * h],
        scale,
        None if add_k is None else add_k[:, :, mine],
        None if add_v is None else add_v[:, :, mine],
        stride=params.stride,
        return_lse=True,
    )
    if not return_lse:
        return HeadAllToAll.apply(False, layout, me, group, "out", out)[0], None
    if lse.dtype == out.dtype:  # one all-to-all for both
        out, lse = HeadAllToAll.apply(False, layout, me, group, "out+lse", out, lse.unsqueeze(-1))
    else:
        (out,) = HeadAllToAll.apply(False, layout, me, group, "out", out)
        (lse,) = HeadAllToAll.apply(False, layout, me, group, "lse", lse.unsqueeze(-1))
    return out, lse.squeeze(-1)


def _na(rank_dims, tensors: dict, kernel_size, dilation, is_causal, scale, stride, return_lse, group, sharded_axes,
        grid, method):  # fmt: skip
    """``tensors``: query, key, value, rpb, additional_keys, additional_values (shards or DTensors)."""
    wrap = None
    if is_dtensor(tensors["query"]):
        tensors, group, sharded_axes, grid, wrap = unwrap(rank_dims, tensors, group, sharded_axes, grid)
    group = resolve_group(group)
    query, key, value, rpb, add_k, add_v = tensors.values()
    # Local checks first; their error travels in the metadata all-gather so that no rank is left waiting.
    error, params, axes = None, None, None
    try:
        params = normalize_params(rank_dims, kernel_size, dilation, stride, is_causal)
        return_lse = check_bool(return_lse, "return_lse")
        axes, grid = check_sharding(sharded_axes, grid, method, rank_dims, dist.get_world_size(group))
        check_local(params, query, key, value, rpb, scale, add_k, add_v, axes)
    except (TypeError, ValueError) as exc:
        error = exc
    setup = gather_setup(error, group, params, tensors, scale, axes, grid, method, return_lse)
    if method == "auto":
        lse_itemsize = (8 if query.dtype == torch.float64 else 4) if return_lse else 0
        method = choose_method(setup, params, query.shape[0], query.element_size(), lse_itemsize)
    args = (rank_dims, setup, params, group, query, key, value, rpb, scale, add_k, add_v)
    out, lse = _halo(*args) if method == "halo" else _heads(*args, return_lse)
    if wrap is not None:
        out, lse = wrap(out, lse if return_lse else None)
    return (out, lse) if return_lse else out


_DOC = """{n}-D fused neighborhood attention over a token grid sharded across a process group.

    Every rank of ``group`` calls this with its shard; the result is that rank's shard of
    ``natten.functional.na{n}d`` on the whole grid (forward and backward, exactly: same windows, same
    softmax, float64 results equal to rounding).

    Args:
        query: this rank's shard ``[batch, {axes}, heads, head_dim]`` (heads-last); along the sharded
            axes shards may be uneven and thinner than a window (at least one token each); the other
            axes are whole and equal on every rank.
        key, value: ``[batch, {axes}, kv_heads, head_dim(_v)]``, shards like ``query``.
        kernel_size, dilation, is_causal, scale, stride, return_lse: as in ``natten.functional.na{n}d``,
            applied to the whole grid; identical on every rank.
        rpb: ``[heads, {rpb}]``, replicated (every rank passes the same tensor); its gradient is summed
            over the ranks in backward, so every rank holds the single-process gradient.
        additional_keys / additional_values: ``[batch, num_additional, kv_heads, head_dim(_v)]``,
            replicated like ``rpb`` (gradients summed over ranks).
        group: (keyword) the ``torch.distributed`` process group; ``None`` is the default group.
        sharded_axes: (keyword) spatial axes cut across ranks, ``0`` = the first spatial axis; an int
            or a tuple; ``None`` means ``0``.
        grid: (keyword) ranks along each sharded axis, row-major over the group's ranks (rank ``r``
            sits at ``unravel(r, grid)``); default ``(group size,)`` for one sharded axis, required for
            several.
        method: (keyword) ``"halo"`` (each rank receives exactly the keys/values its windows reach),
            ``"heads"`` (all-to-all over heads; heads and kv_heads divisible by the group's size), or
            ``"auto"`` (the one moving fewer bytes per rank, from the plan).

    DTensors: ``query``, ``key`` and ``value`` may be DTensors with one ``Shard(spatial dim)`` per mesh
    dimension (``group``, ``sharded_axes`` and ``grid`` then come from the mesh and stay None); the
    results are DTensors with the same placements (see natten.distributed.dtensor).

    Every rank must run the forward, and the backward when gradients are taken (the exchanges are
    collective). Returns this rank's ``[batch, {axes}, heads, head_dim_v]``, or ``(out, lse)`` with
    ``lse`` ``[batch, {axes}, heads]``.
    """


def _public(rank_dims: int, axes: str, rpb: str):
    def op(
        query,
        key,
        value,
        kernel_size,
        dilation=1,
        is_causal=False,
        rpb=None,
        scale=None,
        additional_keys=None,
        additional_values=None,
        *,
        stride=1,
        return_lse=False,
        group=None,
        sharded_axes=None,
        grid=None,
        method="halo",
        is_casual=None,
    ):
        is_causal = causal_alias(is_causal, is_casual, f"natten.distributed.{op.__name__}")
        tensors = dict(query=query, key=key, value=value, rpb=rpb)
        tensors.update(additional_keys=additional_keys, additional_values=additional_values)
        options = (kernel_size, dilation, is_causal, scale, stride, return_lse, group, sharded_axes, grid, method)
        return _na(rank_dims, tensors, *options)

    op.__name__ = op.__qualname__ = f"na{rank_dims}d"
    op.__doc__ = _DOC.format(n=rank_dims, axes=axes, rpb=rpb)
    return op


na1d = _public(1, "length", "2 * kernel_size - 1")
na2d = _public(2, "height, width", "2 * kh - 1, 2 * kw - 1")
na3d = _public(3, "depth, height, width", "2 * kd - 1, 2 * kh - 1, 2 * kw - 1")
