"""The reference oracle: docs/semantics.md, implemented literally.

Every query gathers the keys and values of its own ``K = prod(kernel_size)`` neighborhood slots and
attends to those alone, so it costs ``O(B * heads * N * K * D)`` memory (``N = prod(spatial)``):
meant for checking on small problems (float64 on CPU, or on any device on upcast inputs), never for
speed.

One place holds the semantics: :func:`neighborhood_slots` (the §3 formulas, one axis). Everything
else is derived from its per-axis tables:

* the flat slot table ``[N, K]`` is the product of per-axis slot tables (all three ops),
* the bias at each slot indexes ``rpb`` with per-axis relative positions.

The three public ops differ only in layout: the fused op takes the softmax over the slot logits (plus
the additional keys), ``na_qk`` returns the slot logits, ``na_av`` takes slot weights.

Non-finite values stay where they belong (the dependency sets of §3): a query, its slot keys/values
and its bias are combined with ``where``, never by multiplying by a zero mask, and no dense ``[N, N]``
product is formed (it would add ``0 * v_j`` for every key ``j`` outside the window, and ``0 * NaN``
or ``0 * inf`` is NaN). So a NaN or inf in one input reaches exactly the outputs, and through
autograd the gradients, that depend on it: a tested backend must give the same NaN/inf pattern.

Layouts (docs/semantics.md):

* fused, heads-last: ``q [B, *S, Hq, D]``, ``k [B, *S, Hkv, D]``, ``v [B, *S, Hkv, Dv]``,
  additional KV ``[B, N_add, Hkv, D]`` / ``[B, N_add, Hkv, Dv]``;
* unfused, heads-first: ``q, k [B, H, *S, D]``, ``v [B, H, *S, Dv]``, ``attn [B, H, *S, K (+N_add)]``,
  additional KV ``[B, H, N_add, D]`` / ``[B, H, N_add, Dv]``.

Key/value heads may divide query heads (GQA): query head ``h`` reads kv head ``h // (Hq // Hkv)``.
The unfused ops accept that too (a superset of the contract; harmless for an oracle).

Deliberately permissive where the formulas stay well defined, so that it can check internal paths:
``kernel_size = 1`` is accepted (the kernels' rank-3 promotion uses it), and ``rpb`` is applied by
the formula even for even kernels or causal axes (the API layers reject those combinations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["na_av_reference", "na_qk_reference", "na_reference", "neighborhood_slots"]

IntOrTuple = int | Sequence[int]
BoolOrTuple = bool | Sequence[bool]


# --------------------------------------------------------------------------------------------------
# §3, one axis: the only place the neighborhood formulas live.
# --------------------------------------------------------------------------------------------------


def _check_axis(length: int, kernel_size: int, dilation: int, stride: int, axis: str = "") -> None:
    where = f" on axis {axis}" if axis else ""
    if length < 1:
        raise ValueError(f"spatial length{where} must be >= 1, got {length}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size{where} must be >= 1, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"dilation{where} must be >= 1, got {dilation}")
    if kernel_size * dilation > length:
        raise ValueError(
            f"kernel_size * dilation{where} must be <= the spatial length, got {kernel_size} * {dilation} > {length}"
        )
    if not 1 <= stride <= kernel_size:
        raise ValueError(f"stride{where} must be in [1, kernel_size={kernel_size}], got {stride}")


def neighborhood_slots(
    length: int,
    kernel_size: int,
    dilation: int = 1,
    stride: int = 1,
    is_causal: bool = False,
    *,
    device: torch.device | str | None = None,
    queries: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Neighborhood slots of every query on one axis (docs/semantics.md).

    Slot ``t`` of query ``i`` is the group-local key ``start + t``, i.e. the global key index
    ``g + (start + t) * d`` with ``g = i % d``. Non-causal: all ``kernel_size`` slots are valid
    (the window is shifted at borders, never truncated). Causal: slots past the query are invalid.

    Args:
        length: axis length ``L``.
        kernel_size, dilation, stride, is_causal: this axis' parameters
            (``1 <= kernel_size``, ``kernel_size * dilation <= L``, ``1 <= stride <= kernel_size``).
        device: where to build the tables.
        queries: optional ``LongTensor [M]`` of query indices in ``[0, L)``: the rows of those queries
            only (``[M, kernel_size]``), for checking sampled queries of problems too large for
            ``[L, kernel_size]`` tables.

    Returns:
        ``keys``: ``LongTensor [L, kernel_size]`` (``[M, kernel_size]`` with ``queries``), global key
        index of each slot (always in ``[0, L)``; for a causal axis the invalid slots hold the in-range
        key ``start + t`` that lies past the query).
        ``valid``: ``BoolTensor [L, kernel_size]``, False exactly for causal slots past the query.
    """
    k, d, s = int(kernel_size), int(dilation), int(stride)
    _check_axis(int(length), k, d, s)
    i = torch.arange(length, device=device) if queries is None else queries.to(device=device, dtype=torch.long)
    g = i % d  # dilation group
    p = i // d  # group-local query index
    n = (length - g + d - 1) // d  # group length, ceil((L - g) / d); n >= k because k * d <= L
    block = (p // s) * s  # first query of p's stride block
    t = torch.arange(k, device=device)
    if is_causal:
        leader = torch.minimum(block + s - 1, n - 1)
        start = (leader - k + 1).clamp(min=0)
        local = start[:, None] + t  # start + k - 1 <= leader <= n - 1: always in range
        valid = local <= p[:, None]
    else:
        leader = torch.minimum(block + s // 2, n - 1)
        start = torch.minimum(leader - k // 2, n - k).clamp(min=0)  # clamp(c - left, 0, n - k)
        local = start[:, None] + t
        valid = torch.ones(local.shape, dtype=torch.bool, device=device)
    return g[:, None] + local * d, valid


# --------------------------------------------------------------------------------------------------
# Per-axis tables combined over axes (shared by the three ops).
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    is_causal: tuple[bool, ...]


def _per_axis(value, rank: int, name: str, kind: type) -> tuple:
    if isinstance(value, (bool, int)) and not (kind is int and isinstance(value, bool)):
        return (kind(value),) * rank
    try:
        values = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a {kind.__name__} or a tuple of {rank}, got {value!r}") from None
    if len(values) != rank:
        raise ValueError(f"{name} must have one entry per spatial axis ({rank}), got {value!r}")
    return tuple(kind(x) for x in values)


def _params(spatial: Sequence[int], kernel_size, dilation, stride, is_causal) -> _Params:
    rank = len(spatial)
    if not 1 <= rank <= 3:
        raise ValueError(f"spatial rank must be 1, 2 or 3, got {rank} (spatial shape {tuple(spatial)})")
    prm = _Params(
        _per_axis(kernel_size, rank, "kernel_size", int),
        _per_axis(dilation, rank, "dilation", int),
        _per_axis(stride, rank, "stride", int),
        _per_axis(is_causal, rank, "is_causal", bool),
    )
    for a, L in enumerate(spatial):
        _check_axis(L, prm.kernel_size[a], prm.dilation[a], prm.stride[a], axis=str(a))
    return prm


def _axis_tables(spatial: Sequence[int], prm: _Params, device) -> list[tuple[Tensor, Tensor]]:
    return [
        neighborhood_slots(L, prm.kernel_size[a], prm.dilation[a], prm.stride[a], prm.is_causal[a], device=device)
        for a, L in enumerate(spatial)
    ]


def _axis_views(tables: Sequence[Tensor]) -> list[Tensor]:
    """View per-axis ``[X_a, Y_a]`` tables as ``[1.., X_a at a, 1.., Y_a at R + a, 1..]``.

    Broadcasting the views together gives ``[X_0, .., X_{R-1}, Y_0, .., Y_{R-1}]``: the row-major
    product over axes (queries first, then keys or kernel slots).
    """
    rank = len(tables)
    views = []
    for a, t in enumerate(tables):
        shape = [1] * (2 * rank)
        shape[a], shape[rank + a] = t.shape
        views.append(t.reshape(shape))
    return views


def _slot_table(spatial: Sequence[int], tables) -> tuple[Tensor, Tensor]:
    """Flat slot table: ``keys LongTensor [N, K]`` (flat key index), ``valid BoolTensor [N, K]``.

    Slots are row-major over kernel axes, as in the unfused attention layout.
    """
    rank = len(spatial)
    flat = torch.zeros((), dtype=torch.long, device=tables[0][0].device)
    valid = torch.ones((), dtype=torch.bool, device=tables[0][0].device)
    for a, (kv, vv) in enumerate(zip(_axis_views([t[0] for t in tables]), _axis_views([t[1] for t in tables]))):
        row_stride = 1
        for L in spatial[a + 1 :]:
            row_stride *= L
        flat = flat + kv * row_stride
        valid = valid & vv
    n = flat.shape[:rank].numel()
    return flat.reshape(n, -1), valid.reshape(n, -1)


def _slot_bias(rpb: Tensor, spatial: Sequence[int], prm: _Params, tables, heads: int) -> Tensor:
    """``[H, N, K]``: ``rpb[h, (k-1) + (key - query) / d, ...]`` per axis at every slot.

    Exact for every slot: ``key - query`` is a multiple of ``d`` (same dilation group), and the
    in-range key of an invalid (causal) slot still gives an index in ``[0, 2k-2]``.
    """
    expected = (heads, *(2 * k - 1 for k in prm.kernel_size))
    if tuple(rpb.shape) != expected:
        raise ValueError(f"rpb must have shape [heads, 2k-1 per axis] = {list(expected)}, got {list(rpb.shape)}")
    rel = []
    for L, k, d, (keys, _valid) in zip(spatial, prm.kernel_size, prm.dilation, tables):
        query = torch.arange(L, device=keys.device)
        rel.append((k - 1) + torch.div(keys - query[:, None], d, rounding_mode="floor"))
    bias = rpb[(slice(None), *_axis_views(rel))]  # [H, *S, *kernel]
    n = bias.shape[1 : 1 + len(spatial)].numel()
    return bias.reshape(heads, n, -1)


def _slot_gather(x: Tensor, keys: Tensor, valid: Tensor) -> Tensor:
    """``x [B, H, N, E]`` at each query's slot keys: ``[B, H, N, K, E]``, exactly 0 on invalid slots."""
    return torch.where(valid[..., None], x[:, :, keys], torch.zeros((), dtype=x.dtype, device=x.device))


def _slot_logits(qf: Tensor, kg: Tensor, scale: float | None, bias: Tensor | None, valid: Tensor) -> Tensor:
    """``[B, H, N, K] = scale * q . k_slot + bias``, ``-inf`` on invalid slots, from ``qf [B, H, N, D]``
    and gathered keys ``kg [B, H, N, K, D]``."""
    logits = torch.einsum("bhnd,bhnkd->bhnk", qf, kg)
    if scale is not None:
        logits = logits * scale
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    return torch.where(valid, logits, torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device))


def _window_logits(qf: Tensor, kf: Tensor, spatial: Sequence[int], prm: _Params, rpb, scale: float | None):
    """Heads-first ``qf``/``kf`` ``[B, H, N, D]`` -> (logits ``[B, H, N, K]`` with the bias, keys, valid)."""
    tables = _axis_tables(spatial, prm, qf.device)
    keys, valid = _slot_table(spatial, tables)
    bias = None if rpb is None else _slot_bias(rpb, spatial, prm, tables, qf.shape[1])
    return _slot_logits(qf, _slot_gather(kf, keys, valid), scale, bias, valid), keys, valid


def _slot_sum(weights: Tensor, vg: Tensor, valid: Tensor) -> Tensor:
    """``[B, H, N, E] = sum over valid slots of weight * v_slot``; invalid slots contribute exactly 0
    whatever their weight holds (``-inf``, NaN, garbage)."""
    w = torch.where(valid, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    return torch.einsum("bhnk,bhnke->bhne", w, vg)


def _expand_kv_heads(x: Tensor, heads: int, name: str, head_dim: int = 1) -> Tensor:
    """Repeat kv heads (dim ``head_dim``) so that query head ``h`` reads kv head ``h // (Hq // Hkv)``."""
    hkv = x.shape[head_dim]
    if hkv < 1 or heads % hkv:
        raise ValueError(
            f"{name} heads ({hkv}) must divide the query heads ({heads}); got {name} shape {list(x.shape)}"
        )
    return x.repeat_interleave(heads // hkv, dim=head_dim) if hkv != heads else x


def _check_rank(name: str, x: Tensor, layout: str) -> None:
    if not 4 <= x.dim() <= 6:
        raise ValueError(f"{name} must be {layout} with 1-3 spatial axes, got shape {list(x.shape)}")


def _check_same(name: str, x: Tensor, expected: Sequence[int | None], layout: str) -> None:
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{name} must be {layout} = [{want}], got shape {list(x.shape)}")


# --------------------------------------------------------------------------------------------------
# Public ops.
# --------------------------------------------------------------------------------------------------


def na_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    stride: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
    *,
    rpb: Tensor | None = None,
    scale: float | None = None,
    additional_keys: Tensor | None = None,
    additional_values: Tensor | None = None,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused neighborhood attention, ``softmax(scale * q k^T + rpb) v`` over each query's neighborhood.

    Each query attends to the keys of its §3 slots (gathered, see the module docstring), plus the
    additional tokens; computes in the input dtype (pass float64 to use it as an oracle);
    differentiable by autograd, with NaN/inf confined to their dependency sets.

    Args:
        q: ``[B, *S, Hq, D]`` (spatial rank ``R = q.dim() - 3`` in 1..3).
        k: ``[B, *S, Hkv, D]`` with ``Hq % Hkv == 0``.
        v: ``[B, *S, Hkv, Dv]``.
        kernel_size, dilation, stride, is_causal: int/bool or a tuple of ``R``.
        rpb: ``[Hq, 2*k_0-1, .., 2*k_{R-1}-1]``, added to the logits at ``(k-1) + (key-query)/d`` per axis.
        scale: logit scale; ``None`` means ``D ** -0.5``.
        additional_keys, additional_values: ``[B, N_add, Hkv, D]`` / ``[B, N_add, Hkv, Dv]``, both or
            neither; every query attends them too, with no mask and no bias.
        return_lse: also return the natural-log logsumexp of the logits over all attended keys.

    Returns:
        ``out [B, *S, Hq, Dv]``, or ``(out, lse [B, *S, Hq])`` with ``return_lse``.
    """
    _check_rank("q", q, "heads-last [B, *spatial, heads, D]")
    B, *S, Hq, D = q.shape
    prm = _params(S, kernel_size, dilation, stride, is_causal)
    _check_same("k", k, [B, *S, None, D], "[B, *spatial, kv_heads, D] (heads-last)")
    _check_same("v", v, [B, *S, k.shape[-2], None], "[B, *spatial, kv_heads, Dv] (heads-last)")
    Dv = v.shape[-1]
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if scale is None:
        scale = D**-0.5
    N = q.shape[1:-2].numel()

    def heads_first(x: Tensor, name: str) -> Tensor:  # [B, *S, H, E] -> [B, Hq, N, E]
        return _expand_kv_heads(x.reshape(B, N, x.shape[-2], x.shape[-1]).transpose(1, 2), Hq, name)

    qf, kf, vf = heads_first(q, "q"), heads_first(k, "k"), heads_first(v, "v")
    logits, keys, valid = _window_logits(qf, kf, S, prm, rpb, scale)  # [B, Hq, N, K]
    K = logits.shape[-1]
    if additional_keys is not None:
        _check_same(
            "additional_keys", additional_keys, [B, None, k.shape[-2], D], "[B, N_add, kv_heads, D] (heads-last)"
        )
        _check_same(
            "additional_values",
            additional_values,
            [B, additional_keys.shape[1], k.shape[-2], Dv],
            "[B, N_add, kv_heads, Dv] (heads-last)",
        )
        ak = _expand_kv_heads(additional_keys.transpose(1, 2), Hq, "additional_keys")
        logits = torch.cat([logits, (qf @ ak.transpose(-1, -2)) * scale], dim=-1)
    p = torch.softmax(logits, dim=-1)
    out = _slot_sum(p[..., :K], _slot_gather(vf, keys, valid), valid)  # [B, Hq, N, Dv]
    if additional_keys is not None:  # every query attends every additional token: a plain product
        out = out + p[..., K:] @ _expand_kv_heads(additional_values.transpose(1, 2), Hq, "additional_values")
    out = out.transpose(1, 2).reshape(B, *S, Hq, Dv)
    if not return_lse:
        return out
    lse = torch.logsumexp(logits, dim=-1).transpose(1, 2).reshape(B, *S, Hq)
    return out, lse


def na_qk_reference(
    q: Tensor,
    k: Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    stride: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
    *,
    rpb: Tensor | None = None,
    additional_keys: Tensor | None = None,
) -> Tensor:
    """Unfused QK: neighborhood logits ``q . k + rpb`` per slot (no scale; the caller scales q).

    Args:
        q: ``[B, H, *S, D]`` (heads-first, spatial rank ``R = q.dim() - 3``).
        k: ``[B, Hk, *S, D]`` with ``H % Hk == 0`` (``Hk == H`` in the op contract).
        kernel_size, dilation, stride, is_causal: int/bool or a tuple of ``R``.
        rpb: ``[H, 2*k_0-1, ..]``.
        additional_keys: ``[B, Hk, N_add, D]``; their logits ``q . k_add`` (no bias) are appended.

    Returns:
        ``attn [B, H, *S, K (+ N_add)]``, ``K = prod(kernel_size)``, slots row-major over kernel axes;
        ``-inf`` on invalid (causal, past-the-query) slots.
    """
    _check_rank("q", q, "heads-first [B, heads, *spatial, D]")
    B, H, *S, D = q.shape
    prm = _params(S, kernel_size, dilation, stride, is_causal)
    _check_same("k", k, [B, None, *S, D], "[B, heads, *spatial, D] (heads-first)")
    N = q.shape[2:-1].numel()
    qf = q.reshape(B, H, N, D)
    kf = _expand_kv_heads(k.reshape(B, k.shape[1], N, D), H, "k")
    attn, _, _ = _window_logits(qf, kf, S, prm, rpb, None)
    if additional_keys is not None:
        _check_same("additional_keys", additional_keys, [B, k.shape[1], None, D], "[B, heads, N_add, D] (heads-first)")
        ak = _expand_kv_heads(additional_keys, H, "additional_keys")
        attn = torch.cat([attn, qf @ ak.transpose(-1, -2)], dim=-1)
    return attn.reshape(B, H, *S, attn.shape[-1])


def na_av_reference(
    attn: Tensor,
    v: Tensor,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    stride: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
    *,
    additional_values: Tensor | None = None,
) -> Tensor:
    """Unfused AV: ``out_i = sum over valid slots t of attn[i, t] * v[key(i, t)]`` (+ additional values).

    Args:
        attn: ``[B, H, *S, K (+ N_add)]``, slots as produced by :func:`na_qk_reference`; invalid slots
            are ignored whatever they hold (``-inf``, NaN, garbage).
        v: ``[B, Hv, *S, Dv]`` with ``H % Hv == 0`` (``Hv == H`` in the op contract).
        kernel_size, dilation, stride, is_causal: int/bool or a tuple of ``R = v.dim() - 3``.
        additional_values: ``[B, Hv, N_add, Dv]``, weighted by the last ``N_add`` columns of ``attn``.

    Returns:
        ``out [B, H, *S, Dv]``.
    """
    _check_rank("v", v, "heads-first [B, heads, *spatial, Dv]")
    B, Hv, *S, Dv = v.shape
    prm = _params(S, kernel_size, dilation, stride, is_causal)
    K = 1
    for kk in prm.kernel_size:
        K *= kk
    n_add = 0 if additional_values is None else additional_values.shape[-2]
    _check_same("attn", attn, [B, None, *S, K + n_add], f"[B, heads, *spatial, K + N_add = {K} + {n_add}]")
    H = attn.shape[1]
    N = v.shape[2:-1].numel()
    a = attn.reshape(B, H, N, K + n_add)
    keys, valid = _slot_table(S, _axis_tables(S, prm, v.device))
    vf = _expand_kv_heads(v.reshape(B, Hv, N, Dv), H, "v")
    # where(), not multiplication: an invalid slot holding -inf or NaN must contribute exactly nothing.
    out = _slot_sum(a[..., :K], _slot_gather(vf, keys, valid), valid)
    if additional_values is not None:
        _check_same("additional_values", additional_values, [B, Hv, n_add, Dv], "[B, heads, N_add, Dv] (heads-first)")
        out = out + a[..., K:] @ _expand_kv_heads(additional_values, H, "additional_values")
    return out.reshape(B, H, *S, Dv)
