"""DTensor inputs: the shards, process group, sharded axes and grid come from the DTensors' mesh and
``Shard`` placements; the outputs are DTensors with the same placements (uneven ``torch.chunk``
shards included). Gradients flow through ``to_local`` / ``from_local``.

Supported: ``query``, ``key`` and ``value`` on one mesh with one ``Shard(spatial dim)`` per mesh
dimension (distinct dims), a mesh over its group's ranks in increasing order (a 1-D mesh, or an N-D
mesh over the whole default group: rank ``r`` then sits at ``unravel(r, mesh.shape)``, the grid order
of natten.distributed); rpb and additional keys/values as plain tensors or replicated DTensors.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_dtensor(x) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return False
    return isinstance(x, DTensor)


def _placement_axes(placements, rank_dims: int) -> tuple[int, ...]:
    from torch.distributed.tensor import Shard

    axes = []
    for p in placements:
        if not isinstance(p, Shard):
            raise ValueError(
                f"query/key/value DTensors must be sharded with one Shard(spatial dim) per mesh dimension; got "
                f"placements {tuple(placements)} (Replicate/Partial: pass to_local() shards with group= instead)"
            )
        dim = p.dim % (rank_dims + 3)
        if not 1 <= dim <= rank_dims:
            raise ValueError(
                f"query/key/value DTensors must be sharded along spatial dims 1..{rank_dims} of "
                f"[batch, *spatial, heads, head_dim]; got placements {tuple(placements)}"
            )
        axes.append(dim - 1)
    if len(set(axes)) != len(axes):
        raise ValueError(f"each spatial dim may be sharded by one mesh dimension only; got {tuple(placements)}")
    return tuple(axes)


def _mesh_group(mesh):
    ranks = mesh.mesh.flatten().tolist()
    if ranks != sorted(ranks):
        raise ValueError(f"the DeviceMesh must list its ranks in increasing order; got {mesh.mesh.tolist()}")
    if mesh.ndim == 1:
        return mesh.get_group()
    if ranks != list(range(dist.get_world_size())):
        raise ValueError(
            f"a DeviceMesh of {mesh.ndim} dimensions must span the default group (ranks 0..{dist.get_world_size() - 1}"
            f" in order); got {mesh.mesh.tolist()}: pass to_local() shards with group= and grid= instead"
        )
    return dist.group.WORLD


def _local(x, name: str, mesh):
    """A replicated input's local tensor (plain tensors pass through)."""
    if x is None or not is_dtensor(x):
        return x
    from torch.distributed.tensor import Replicate

    if x.device_mesh != mesh or any(not isinstance(p, Replicate) for p in x.placements):
        raise ValueError(f"{name} as a DTensor must be replicated on query's mesh; got placements {x.placements}")
    return x.to_local()


def unwrap(rank_dims: int, tensors: dict, group, sharded_axes, grid):
    """``(local tensors, group, sharded_axes, grid, wrap)`` for DTensor inputs; ``wrap(out, lse)`` turns
    the local results back into DTensors."""
    from torch.distributed.tensor import DTensor

    query = tensors["query"]
    mesh, placements = query.device_mesh, tuple(query.placements)
    for name in ("key", "value"):
        t = tensors[name]
        if not is_dtensor(t) or t.device_mesh != mesh or tuple(t.placements) != placements:
            raise TypeError(
                f"{name} must be a DTensor on query's mesh with query's placements {placements} when query is one; "
                f"got {type(t).__name__}" + (f" with placements {tuple(t.placements)}" if is_dtensor(t) else "")
            )
    if group is not None or sharded_axes is not None or grid is not None:
        raise ValueError(
            "group, sharded_axes and grid come from the DTensors' mesh and placements; got "
            f"group={group!r}, sharded_axes={sharded_axes!r}, grid={grid!r} (leave them None)"
        )
    if query.dim() != rank_dims + 3:
        raise ValueError(f"query must have {rank_dims + 3} dims [batch, *spatial, heads, head_dim]; got {query.dim()}")
    axes = _placement_axes(placements, rank_dims)
    group = _mesh_group(mesh)
    local = {n: tensors[n].to_local() for n in ("query", "key", "value")}
    local.update({n: _local(tensors[n], n, mesh) for n in ("rpb", "additional_keys", "additional_values")})
    out_shape = (*query.shape[:-1], tensors["value"].shape[-1])

    def wrap(out: torch.Tensor, lse: torch.Tensor | None):
        def to_dtensor(x, shape):
            stride = torch.empty(shape, device="meta").stride()
            return DTensor.from_local(x, mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride)

        return to_dtensor(out, out_shape), None if lse is None else to_dtensor(lse, out_shape[:-1])

    return local, group, axes, tuple(mesh.shape), wrap
