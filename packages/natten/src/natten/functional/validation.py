"""Argument checks for every natten op, run in Python before any kernel.

Errors are ValueError (bad values or shapes) or TypeError (bad types), naming the argument, what was
expected and what was received.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IntOrTuple = int | Sequence[int]
BoolOrTuple = bool | Sequence[bool]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


@dataclass(frozen=True)
class NAParams:
    """Normalized per-axis neighborhood parameters (tuples of length ``rank``)."""

    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    is_causal: tuple[bool, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    @property
    def num_slots(self) -> int:
        n = 1
        for k in self.kernel_size:
            n *= k
        return n

    def as_op_args(self) -> tuple[list[int], list[int], list[int], list[bool]]:
        return list(self.kernel_size), list(self.dilation), list(self.stride), list(self.is_causal)

    @property
    def any_causal(self) -> bool:
        return any(self.is_causal)


def fused_axes(rank: int, heads: str = "heads", dim: str = "head_dim") -> tuple[str, ...]:
    return ("batch", *_AXES[rank], heads, dim)


def unfused_axes(rank: int, dim: str = "head_dim") -> tuple[str, ...]:
    return ("batch", "heads", *_AXES[rank], dim)


def _layout(axes: Sequence[str]) -> str:
    return f"[{', '.join(axes)}]"


def fused_layout(rank: int) -> str:
    return _layout(fused_axes(rank))


def unfused_layout(rank: int) -> str:
    return _layout(unfused_axes(rank))


def _is_bool(value) -> bool:
    """A Python or numpy bool (never an int, a string or a tensor)."""
    if isinstance(value, bool):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.bool_)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool; booleans only (numpy bools too): 0/1, strings and None raise TypeError."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be a bool (True or False); got {value!r} of type {type(value).__name__}")
    return bool(value)


def _per_axis(value, rank: int, name: str, kind: type) -> tuple:
    """An int/bool, or a tuple/list of them with one entry per spatial axis."""

    def ok(v) -> bool:
        if kind is bool:
            return _is_bool(v)
        return isinstance(v, int) and not isinstance(v, bool)

    if ok(value):
        return (kind(value),) * rank
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{name} must have one entry per spatial axis ({rank}); got {tuple(value)}")
        if not all(ok(v) for v in value):
            raise TypeError(f"{name} entries must be {kind.__name__}; got {tuple(value)}")
        return tuple(kind(v) for v in value)
    raise TypeError(f"{name} must be a {kind.__name__} or a tuple of {rank} {kind.__name__}s; got {value!r}")


def normalize_params(
    rank: int,
    kernel_size: IntOrTuple,
    dilation: IntOrTuple = 1,
    stride: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
) -> NAParams:
    """Check the value rules that do not depend on input shapes."""
    ks = _per_axis(kernel_size, rank, "kernel_size", int)
    dil = _per_axis(dilation, rank, "dilation", int)
    st = _per_axis(stride, rank, "stride", int)
    causal = _per_axis(is_causal, rank, "is_causal", bool)
    if any(k < 2 for k in ks):
        raise ValueError(f"kernel_size must be >= 2 on every axis; got {ks}")
    if any(d < 1 for d in dil):
        raise ValueError(f"dilation must be >= 1 on every axis; got {dil}")
    if any(s < 1 or s > k for s, k in zip(st, ks)):
        raise ValueError(
            f"stride must satisfy 1 <= stride <= kernel_size on every axis; got stride={st}, kernel_size={ks}"
        )
    return NAParams(ks, dil, st, causal)


def check_spatial_extent(params: NAParams, spatial: Sequence[int], name: str, shape, layout: str) -> None:
    for axis, (k, d, n) in enumerate(zip(params.kernel_size, params.dilation, spatial)):
        if k * d > n:
            raise ValueError(
                f"kernel_size * dilation must not exceed the input size on every axis; on axis {axis} "
                f"kernel_size={k} * dilation={d} = {k * d} > {n} in {name} of shape {tuple(shape)} "
                f"(expected layout {layout}; if a heads axis sits where a spatial axis belongs, permute "
                f"the tensor)"
            )


def check_tensor(t, name: str, dims: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.is_nested:
        raise TypeError(f"{name} must be a regular (strided) tensor {layout}; got a nested tensor")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims {layout}; got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64; got {t.dtype}")


def check_not_empty(t: torch.Tensor, name: str, axes: Sequence[str]) -> None:
    """Every axis but batch must be non-empty (a zero batch gives an empty result)."""
    empty = [a for a, n in zip(axes, t.shape) if n == 0 and a != "batch"]
    if empty:
        raise ValueError(
            f"{name} has a zero-size {' and '.join(empty)} axis; expected {_layout(axes)} with every axis but "
            f"batch non-empty (a zero batch gives an empty result); got shape {tuple(t.shape)}"
        )


def check_not_nested(tensors: dict, ops: str, hint: str) -> None:
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_nested:
            raise TypeError(f"{name} is a nested tensor; {ops} do not support nested tensors: {hint}")


def check_same(ref: torch.Tensor, ref_name: str, other: torch.Tensor, name: str) -> None:
    if other.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}); got {other.dtype}")
    if other.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}); got {other.device}")


def check_rpb(rpb, params: NAParams, heads: int, ref: torch.Tensor) -> None:
    if rpb is None:
        return
    if not isinstance(rpb, torch.Tensor):
        raise TypeError(f"rpb must be a torch.Tensor or None; got {type(rpb).__name__}")
    if rpb.is_nested:
        raise TypeError("rpb must be a regular (strided) tensor [heads, *(2 * kernel_size - 1)]; got a nested tensor")
    if params.any_causal:
        raise ValueError(f"rpb is not supported with causal masking; got is_causal={params.is_causal}")
    if any(k % 2 == 0 for k in params.kernel_size):
        raise ValueError(f"rpb requires an odd kernel_size on every axis; got kernel_size={params.kernel_size}")
    expected = (heads, *(2 * k - 1 for k in params.kernel_size))
    if tuple(rpb.shape) != expected:
        raise ValueError(f"rpb must have shape [heads, *(2 * kernel_size - 1)] = {expected}; got {tuple(rpb.shape)}")
    if rpb.dtype not in FLOAT_DTYPES:
        raise TypeError(f"rpb must be a floating tensor; got {rpb.dtype}")
    if rpb.device != ref.device:
        raise ValueError(f"rpb must be on the device of query ({ref.device}); got {rpb.device}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels compute in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_scale(scale, dtype: torch.dtype | None = None, name: str = "scale") -> float | None:
    """``scale`` as a float (None stays None).

    Any finite real number is a valid logit scale, zero and negatives included (scale 0 gives uniform
    attention, a negative scale reverses the preference). Refused: bools and non-numbers (TypeError);
    NaN, +-inf and numbers beyond the float range of the dtype the kernels compute in (float32 unless
    the inputs are float64), which would give all-NaN outputs or overflow (ValueError).
    """
    if scale is None:
        return None
    if _is_bool(scale) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{name} must be a float or None; got {scale!r} of type {type(scale).__name__}")
    try:
        value = float(scale)
    except OverflowError:
        raise ValueError(f"{name} must be a finite float; got {scale!r}, which is beyond the float range") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float; got {value} (it would make every output NaN)")
    if dtype is not None:
        acc = compute_dtype(dtype)
        limit = torch.finfo(acc).max
        if abs(value) > limit:
            raise ValueError(
                f"{name} must be representable in {str(acc).removeprefix('torch.')}, the dtype the kernels compute "
                f"{str(dtype).removeprefix('torch.')} inputs in (|{name}| <= {limit:.4g}); got {value}"
            )
    return value


@dataclass(frozen=True)
class FusedShapes:
    heads: int
    kv_heads: int
    head_dim: int
    head_dim_v: int
    num_additional: int
    scale: float  # the checked scale, or head_dim ** -0.5 for scale=None


_FUSED_NESTED_HINT = (
    "run each sequence as a batch of one (e.g. [na2d(q.unsqueeze(0), ...) for q in query.unbind()]) or use "
    "the unfused ops na1d_qk/na1d_av (na2d_*, na3d_*), which accept nested tensors in the forward pass"
)


def check_fused(
    query, key, value, params: NAParams, rpb, scale, additional_keys, additional_values, query_offset=None
) -> FusedShapes:
    """Heads-last fused op inputs: query [B, *S, H, D], key [B, *S, Hkv, D], value [B, *S, Hkv, Dv];
    with ``query_offset`` (a tuple of ints, one per axis) the query is the box of that shape at that
    offset of the key grid."""
    rank = params.rank
    layout = fused_layout(rank)
    named = {"query": query, "key": key, "value": value, "rpb": rpb}
    named.update(additional_keys=additional_keys, additional_values=additional_values)
    check_not_nested(named, "the fused ops (na1d/na2d/na3d)", _FUSED_NESTED_HINT)
    for t, name in ((query, "query"), (key, "key"), (value, "value")):
        check_tensor(t, name, rank + 3, layout)
    check_not_empty(query, "query", fused_axes(rank))
    check_not_empty(key, "key", fused_axes(rank, "kv_heads"))
    check_not_empty(value, "value", fused_axes(rank, "kv_heads", "head_dim_v"))
    check_same(query, "query", key, "key")
    check_same(query, "query", value, "value")
    b, *spatial, heads, dim = query.shape
    grid = spatial if query_offset is None else list(key.shape[1:-2])
    if tuple(key.shape[:-2]) != (b, *grid) or tuple(value.shape[:-2]) != (b, *grid):
        raise ValueError(
            f"query, key and value must share batch and spatial axes {layout}; got query {tuple(query.shape)}, "
            f"key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if query_offset is not None and (
        len(query_offset) != rank or any(o < 0 or o + n > m for o, n, m in zip(query_offset, spatial, grid))
    ):
        raise ValueError(
            f"query_offset {tuple(query_offset)} must place the query's spatial box {tuple(spatial)} inside the "
            f"key grid {tuple(grid)} (one non-negative offset per spatial axis)"
        )
    kv_heads = key.shape[-2]
    if key.shape[-1] != dim:
        raise ValueError(f"key must have the head_dim of query ({dim}); got key of shape {tuple(key.shape)}")
    if value.shape[-2] != kv_heads:
        raise ValueError(f"value must have the heads of key ({kv_heads}); got value of shape {tuple(value.shape)}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(
            f"key/value heads ({kv_heads}) must divide query heads ({heads}) (GQA/MQA); got query "
            f"{tuple(query.shape)}, key {tuple(key.shape)} in layout {layout}"
        )
    if query_offset is None:
        check_spatial_extent(params, spatial, "query", query.shape, layout)
    else:
        check_spatial_extent(params, grid, "key", key.shape, layout)
    check_rpb(rpb, params, heads, query)
    scale = check_scale(scale, query.dtype)
    n_add = 0
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is not None:
        add_layout = "[batch, num_additional, kv_heads, head_dim]"
        check_tensor(additional_keys, "additional_keys", 4, add_layout)
        check_tensor(additional_values, "additional_values", 4, add_layout)
        check_same(query, "query", additional_keys, "additional_keys")
        check_same(query, "query", additional_values, "additional_values")
        n_add = additional_keys.shape[1]
        exp_k = (b, n_add, kv_heads, dim)
        exp_v = (b, n_add, kv_heads, value.shape[-1])
        if tuple(additional_keys.shape) != exp_k:
            raise ValueError(
                f"additional_keys must have shape {add_layout} = {exp_k}; got {tuple(additional_keys.shape)}"
            )
        if tuple(additional_values.shape) != exp_v:
            raise ValueError(
                f"additional_values must have shape {add_layout} = {exp_v}; got {tuple(additional_values.shape)}"
            )
    return FusedShapes(heads, kv_heads, dim, value.shape[-1], n_add, dim**-0.5 if scale is None else scale)


def _check_unfused_additional(extra, name: str, like, like_name: str) -> None:
    """Heads-first additional keys/values [B, H, N, D]: batch, heads and head_dim those of ``like``."""
    add_layout = "[batch, heads, num_additional, head_dim]"
    check_tensor(extra, name, 4, add_layout)
    check_same(like, like_name, extra, name)
    b, h, d = like.shape[0], like.shape[1], like.shape[-1]
    if (extra.shape[0], extra.shape[1], extra.shape[3]) != (b, h, d):
        raise ValueError(
            f"{name} must have shape {add_layout} with batch={b}, heads={h}, head_dim={d}; got {tuple(extra.shape)}"
        )


def check_unfused_qk(query, key, params: NAParams, rpb, additional_keys) -> None:
    """Heads-first qk inputs: query/key [B, H, *S, D], additional_keys [B, H, N, D]."""
    layout = unfused_layout(params.rank)
    check_tensor(query, "query", params.rank + 3, layout)
    check_tensor(key, "key", params.rank + 3, layout)
    check_not_empty(query, "query", unfused_axes(params.rank))
    check_not_empty(key, "key", unfused_axes(params.rank))
    check_same(query, "query", key, "key")
    if key.shape != query.shape:
        raise ValueError(
            f"query and key must have the same shape {layout}; got query {tuple(query.shape)}, key {tuple(key.shape)}"
        )
    check_spatial_extent(params, query.shape[2:-1], "query", query.shape, layout)
    check_rpb(rpb, params, query.shape[1], query)
    if additional_keys is not None:
        _check_unfused_additional(additional_keys, "additional_keys", query, "query")


def check_unfused_av(attn, value, params: NAParams, additional_values) -> None:
    """Heads-first av inputs: attn [B, H, *S, K (+N)], value [B, H, *S, Dv], additional_values [B, H, N, Dv]."""
    layout = unfused_layout(params.rank)
    attn_layout = f"[batch, heads, {', '.join(_AXES[params.rank])}, prod(kernel_size) (+ num_additional)]"
    check_tensor(attn, "attn", params.rank + 3, attn_layout)
    check_tensor(value, "value", params.rank + 3, layout)
    check_not_empty(value, "value", unfused_axes(params.rank))
    check_same(value, "value", attn, "attn")
    if tuple(attn.shape[:-1]) != tuple(value.shape[:-1]):
        raise ValueError(
            f"attn and value must share batch, heads and spatial axes; got attn {tuple(attn.shape)}, "
            f"value {tuple(value.shape)}"
        )
    check_spatial_extent(params, value.shape[2:-1], "value", value.shape, layout)
    n_add = 0
    if additional_values is not None:
        _check_unfused_additional(additional_values, "additional_values", value, "value")
        n_add = additional_values.shape[2]
    expected = params.num_slots + n_add
    if attn.shape[-1] != expected:
        raise ValueError(
            f"attn must have prod(kernel_size) + num_additional = {params.num_slots} + {n_add} = {expected} "
            f"entries in its last axis; got attn of shape {tuple(attn.shape)}"
        )


def causal_alias(is_causal, is_casual, where: str):
    """``is_casual`` (the misspelling in NATTEN 0.17's examples) as a deprecated alias of ``is_causal``:
    a DeprecationWarning names the right spelling; both given with different values is a TypeError."""
    if is_casual is None:
        return is_causal
    import warnings

    warnings.warn(
        f"{where}: is_casual= is a misspelling kept for NATTEN 0.17 code; spell it is_causal=",
        DeprecationWarning,
        stacklevel=3,
    )
    if is_causal is not False and is_causal != is_casual:
        raise TypeError(f"{where}: got is_causal={is_causal!r} and is_casual={is_casual!r}; pass only is_causal")
    return is_casual
