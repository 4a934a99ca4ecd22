"""One spec per ``natten::`` op: its schema, its fake (meta) implementation and its FLOP formula.

Registration (the Python-defined schemas of triton/standalone.py, the fakes, the FLOP formulas and
the vmap rules) is derived from :data:`SPECS`; the compiled library defines the same schemas in
``csrc/ops.cpp`` for its CPU kernels, and tests/test_ops.py checks that they are equal.

Fakes and formulas receive the call's arguments bound by name (:func:`bind`): ``a.q``, ``a.rpb``,
``a.kernel_size``, ..., so no function here repeats an op's argument list.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from natten_kernels.ops import fake, flops

_PARAMS = "int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal"


@dataclass(frozen=True)
class OpSpec:
    name: str
    schema: str  # the argument and return lists, as torch.library takes them after the name
    fake: Callable[[SimpleNamespace], object]
    macs: Callable[[SimpleNamespace], int]
    family: str  # "fused" or "unfused"

    @property
    def arg_names(self) -> tuple[str, ...]:
        return _arg_names(self.schema)


@functools.cache  # bind() runs on every fake and every CUDA backward call
def _arg_names(schema: str) -> tuple[str, ...]:
    args = schema[schema.index("(") + 1 : schema.index(") ->")]
    return tuple(re.sub(r"=.*$", "", part.strip()).split()[-1] for part in args.split(","))


@functools.cache
def _list_defaults(schema: str) -> tuple[str, ...]:
    """The arguments that default to ``[]`` (``config``, ``query_offset``)."""
    args = schema[schema.index("(") + 1 : schema.index(") ->")]
    return tuple(part.split("=")[0].split()[-1] for part in args.split(",") if part.strip().endswith("=[]"))


SPECS: dict[str, OpSpec] = {
    s.name: s
    for s in (
        OpSpec(
            "na_fused_forward",
            "(Tensor q, Tensor k, Tensor v, Tensor? rpb, Tensor? additional_keys, Tensor? additional_values, "
            f"{_PARAMS}, float scale, int[] config=[], int[] query_offset=[]) -> (Tensor out, Tensor lse)",
            fake.fused_forward,
            flops.fused_forward_macs,
            "fused",
        ),
        OpSpec(
            "na_fused_backward",
            "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? grad_lse, Tensor? rpb, "
            f"Tensor? additional_keys, Tensor? additional_values, {_PARAMS}, float scale, int[] config=[], "
            "int[] query_offset=[]) -> "
            "(Tensor dq, Tensor dk, Tensor dv, Tensor drpb, Tensor d_additional_keys, Tensor d_additional_values)",
            fake.fused_backward,
            flops.fused_backward_macs,
            "fused",
        ),
        OpSpec(
            "na_qk_forward",
            f"(Tensor q, Tensor k, Tensor? rpb, {_PARAMS}, int[] config=[]) -> Tensor attn",
            fake.qk_forward,
            flops.qk_forward_macs,
            "unfused",
        ),
        OpSpec(
            "na_qk_backward",
            f"(Tensor grad_attn, Tensor q, Tensor k, Tensor? rpb, {_PARAMS}, int[] config=[]) -> "
            "(Tensor dq, Tensor dk, Tensor drpb)",
            fake.qk_backward,
            flops.qk_backward_macs,
            "unfused",
        ),
        OpSpec(
            "na_av_forward",
            f"(Tensor attn, Tensor v, {_PARAMS}, int[] config=[]) -> Tensor out",
            fake.av_forward,
            flops.av_forward_macs,
            "unfused",
        ),
        OpSpec(
            "na_av_backward",
            f"(Tensor grad_out, Tensor attn, Tensor v, {_PARAMS}, int[] config=[]) -> (Tensor grad_attn, Tensor dv)",
            fake.av_backward,
            flops.av_backward_macs,
            "unfused",
        ),
    )
}


def bind(name: str, args: tuple, kwargs: dict | None = None, strict: bool = True) -> SimpleNamespace:
    """The arguments of a call of ``torch.ops.natten.<name>`` by name (``config`` and ``query_offset``
    default to ``[]``; tensors may be given as shapes, as FLOP counters do). ``strict=False`` lets trailing arguments a
    FLOP formula does not read (``scale``) be left out and ignores extra ones (fvcore's nodes)."""
    names = SPECS[name].arg_names
    if len(args) > len(names) and strict:
        raise TypeError(f"natten::{name} takes {len(names)} arguments, got {len(args)}")
    values = dict(zip(names, args))
    for key, value in (kwargs or {}).items():
        if key not in names:
            raise TypeError(f"natten::{name} has no argument {key!r}")
        values[key] = value
    defaults = _list_defaults(SPECS[name].schema)
    missing = [n for n in names if n not in values and n not in defaults]
    if missing and not strict:
        values.update(dict.fromkeys(missing))
    elif missing:
        raise TypeError(f"natten::{name} is missing {', '.join(missing)}")
    for n in defaults:
        values.setdefault(n, [])
    return SimpleNamespace(**values)


def call_fake(name: str) -> Callable:
    """The op's fake implementation with the op's own calling convention."""
    spec = SPECS[name]
    return lambda *args, **kwargs: spec.fake(bind(name, args, kwargs))


def macs(op: str, *args, **kwargs) -> int:
    """Multiply-adds of ``torch.ops.natten.<op>`` called with these arguments (tensors or shapes)."""
    return SPECS[op].macs(bind(op, args, kwargs, strict=False))
