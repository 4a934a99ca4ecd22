"""TMA (Hopper's bulk tensor copies) for the Triton launchers: alignment, host-built descriptors,
the per-thread scratch allocator of device-built ones, and the guards around Triton 3.6 miscompiles."""

from __future__ import annotations

import functools

import torch
import triton

from natten_kernels.triton.layout import dim_block


@functools.lru_cache(maxsize=8)
def has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def aligned(tensors, elem) -> bool:
    """TMA needs a Hopper (or newer) GPU and tensors with 16-byte aligned bases and strides (all but
    the last, which must be 1); elsewhere the TMA variant runs with pointer loads."""

    def ok(x):
        strides = (x.stride(i) * elem for i in range(x.dim() - 1))
        return x.data_ptr() % 16 == 0 and x.stride(-1) == 1 and all(s % 16 == 0 for s in strides)

    return all(x.is_cuda and has_tma(x.device.index or 0) and ok(x) for x in tensors)


def _scratch(size, align, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_allocator():
    """Device-side TMA descriptors need a scratch allocator. Triton keeps it per thread (a context
    variable), and autograd runs the backward in its own thread, so it is checked before every launch
    that needs it; where none is set, torch's caching allocator backs it (a user's own is kept)."""
    try:
        from triton.runtime import _allocation

        if not isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
            return
    except (ImportError, AttributeError):  # private API moved: set ours
        pass
    triton.set_allocator(_scratch)


def descriptor_spec(x, dim, box, dl):
    """``(shape, strides, block)`` of a TMA descriptor over ``[B, L0, L1, L2, H * dim]`` with ``[1, *box,
    dim]`` blocks, or None where one cannot describe ``x`` (dilation, a head dim that does not fill its
    block, heads not packed, not TMA-aligned): rows past an axis read as zeros, one descriptor serves
    every program."""
    if any(a != 1 for a in dl) or dim != dim_block(dim) or x.stride(4) != dim or not aligned((x,), x.element_size()):
        return None
    return [*x.shape[:4], x.shape[4] * dim], [*x.stride()[:4], 1], [1, *box, dim]


def descriptor(x, spec):
    """The host-built descriptor of ``spec`` (:func:`descriptor_spec`) over ``x``'s memory."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(x, *spec)


def streamed_tiles_ok(resident_rows: int, streamed_rows: int, d: int, dv: int) -> bool:
    """Whether streamed tiles may come through TMA for these blocks. With Triton 3.6 on the H200,
    square streamed tiles (as many rows as the padded head dim, 32 or 64) against a resident tile of
    64 rows or more gave wrong results: forward outputs and dk (max error 0.7-2.4 on 2D bf16/fp16
    problems; perf notes v5). Those configs load by pointer instead. (Perf notes v7 traced that fault
    to the resident tile's TMA load, :func:`resident_tiles_ok`; this older guard stays until its
    configs are re-measured with streamed TMA.)"""
    return not (resident_rows >= 64 and streamed_rows in (dim_block(d), dim_block(dv)) and streamed_rows <= 64)


def resident_tiles_ok(resident_box, streamed_rows: int, d: int, dv: int) -> bool:
    """Whether a resident tile (forward q, dq pass q/dO, dk/dv pass k/v) may load through a host-built
    TMA descriptor. Triton 3.6 miscompiles one case (perf notes v7, docs/gpu.md): a resident box with
    more than one non-unit axis (a 2D/3D tile, reshaped from the descriptor's rank-5 block) against
    streamed tiles with as many rows as the padded head dim. Every output of such a launch was wrong
    (S3's 128x128 forward at head dim 128: LSE off by 0.72, outputs 300x the rounding error), at head
    dims 32, 64 and 128, in the forward, the dq pass and the dk/dv pass; the same tiles loaded by
    pointer, or through 1D boxes, were right. Such resident tiles load by pointer."""
    multi_axis = sum(int(b) > 1 for b in resident_box) > 1
    return not (multi_axis and streamed_rows in (dim_block(d), dim_block(dv)))


def specs(k3, v3, kbox, d, dv, dl, want_tma: bool, device_ok: bool = True):
    """How a kernel loads two operands. Streamed: K and V (Q and dO in the dk/dv pass); resident,
    with ``device_ok=False``: q and dO in the dq pass, k and v in the dk/dv pass, which then land in
    shared memory without staging through registers. Returns ``(k spec, v spec, "host")`` where
    descriptors built here describe the tensors (:func:`descriptor_spec`), ``(None, None,
    "device")`` (each program builds descriptors over its dilation group: a fixed cost per program
    that short key loops feel) where only TMA can and the kernel has that path, else ``(None, None,
    "")`` with pointer loads."""
    if not (want_tma and aligned((k3, v3), k3.element_size())):
        return None, None, ""
    ks, vs = descriptor_spec(k3, d, kbox, dl), descriptor_spec(v3, dv, kbox, dl)
    if ks is not None and vs is not None:
        return ks, vs, "host"
    return None, None, "device" if device_ok else ""


def operands(k3, v3, kbox, d, dv, dl, want_tma: bool, device_ok: bool = True):
    """What a kernel gets for two operands (:func:`specs`): ``(k, v, "host")`` as descriptors,
    ``(k3, v3, "device")`` (the TMA allocator set), or ``(k3, v3, "")``."""
    ks, vs, how = specs(k3, v3, kbox, d, dv, dl, want_tma, device_ok)
    if how == "host":
        return descriptor(k3, ks), descriptor(v3, vs), how
    if how == "device":
        ensure_allocator()
    return k3, v3, how
