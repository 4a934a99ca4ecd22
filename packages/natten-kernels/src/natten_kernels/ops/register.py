"""Everything registered for an op, derived from its spec (ops/spec.py).

An op is ``natten::<name>`` with the schema of ``SPECS[spec_name]``: the library's own ops (defined in
C++ by ``csrc/ops.cpp``, or from Python by :func:`define` where the library is missing) and the ops a
backend runs under its own name (``Backend.op_prefix``, e.g. ``natten::flex_na_fused_forward``).
Each gets the spec's fake, FLOP formula and vmap rule (:func:`annotate`), and the kernels its backends
declare (:func:`install`), imported on first call so that importing natten needs no triton.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch

from natten_kernels.ops.spec import SPECS, call_fake

_fragment: torch.library.Library | None = None
_annotated: set[str] = set()
_kernels: dict[tuple[str, str], str] = {}  # (op, device) -> the kernel a backend installed


def _has_schema(name: str) -> bool:
    try:
        torch._C._get_schema(f"natten::{name}", "")
    except RuntimeError:
        return False
    return True


def define(name: str, spec_name: str | None = None) -> None:
    """Define ``natten::<name>`` from Python with the schema of ``SPECS[spec_name]`` (default: ``name``)
    unless an op of that name exists, and :func:`annotate` it."""
    global _fragment
    spec = SPECS[spec_name or name]
    if not _has_schema(name):
        if _fragment is None:
            _fragment = torch.library.Library("natten", "FRAGMENT")
        _fragment.define(name + spec.schema, tags=(torch.Tag.pt2_compliant_tag,))
    annotate(name, spec_name)


def annotate(name: str, spec_name: str | None = None) -> None:
    """Register the fake, the FLOP formula and the vmap rule of ``natten::<name>`` (once)."""
    if name in _annotated:
        return
    from torch.utils import flop_counter

    from natten_kernels.ops.flops import flop_formula
    from natten_kernels.ops.vmap import per_sample

    spec_name = spec_name or name
    qualname = f"natten::{name}"
    torch.library.register_fake(qualname, call_fake(spec_name))
    op = getattr(torch.ops.natten, name)
    torch.library.register_vmap(qualname, per_sample(op))
    if op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op)(flop_formula(spec_name))
    _annotated.add(name)


def _lazy(path: str):
    """``"module:function"`` as a kernel that imports its module on the first call."""
    module, _, attr = path.partition(":")

    def kernel(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    kernel.__name__ = attr
    return kernel


def _native_kernel(name: str, device: str) -> bool:
    """Whether ``natten::<name>`` has a kernel for ``device`` that no backend installed (the library's)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"natten::{name}", key)


def install(backends: Iterable) -> None:
    """Define each backend's ops that do not exist yet and register the kernels it declares, per device.

    Raises:
        ValueError: a backend would replace another kernel of the same op and device (the library's,
            or another backend's): it needs an ``op_prefix`` of its own.
    """
    for backend in backends:
        for base, path in backend.kernels.items():
            name = backend.op_prefix + base
            if name not in SPECS:
                define(name, base)
            for device in sorted(backend.devices):
                taken = _kernels.get((name, device))
                if taken == path:
                    continue
                if taken is not None or _native_kernel(name, device):
                    raise ValueError(
                        f"backend {backend.name!r}: natten::{name} already has a {device} kernel "
                        f"({taken or 'the compiled library'}); give the backend an op_prefix of its own"
                    )
                torch.library.register_kernel(f"natten::{name}", device, _lazy(path))
                _kernels[(name, device)] = path
