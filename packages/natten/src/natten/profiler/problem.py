"""The problem the profiler times: one fused neighborhood-attention call and its useful FLOPs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from natten_kernels.ops.flops import flops

from natten.functional.validation import check_spatial_extent, fused_layout, normalize_params

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}

# Per spatial rank: (shape, kernel_size) used when only --dimension is given.
DEFAULTS = {
    1: ((4096,), (65,)),
    2: ((64, 64), (13, 13)),
    3: ((8, 16, 16), (3, 5, 5)),
}


def axes(values) -> str:
    return "x".join(str(int(v)) for v in values)


@dataclass(frozen=True)
class ProfileProblem:
    """Heads-last self-attention ``q, k, v [batch, *shape, heads, head_dim]`` with neighborhood parameters.

    Build it with :meth:`create`, which checks the parameters with natten's own validation.
    """

    shape: tuple[int, ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    is_causal: tuple[bool, ...]
    batch: int = 2
    heads: int = 4
    head_dim: int = 32
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @classmethod
    def create(cls, shape, kernel_size, dilation=1, stride=1, is_causal=False, **kwargs) -> ProfileProblem:
        """Normalize per-axis arguments (an int/bool or one per axis); ValueError/TypeError when invalid."""
        shape = tuple(int(n) for n in shape)
        if not 1 <= len(shape) <= 3:
            raise ValueError(f"shape must have 1 to 3 spatial axes; got {shape}")
        params = normalize_params(len(shape), kernel_size, dilation, stride, is_causal)
        layout = fused_layout(len(shape))
        full = (kwargs.get("batch", 2), *shape, kwargs.get("heads", 4), kwargs.get("head_dim", 32))
        check_spatial_extent(params, shape, "query", full, layout)
        for name in ("batch", "heads", "head_dim"):
            if name in kwargs and (not isinstance(kwargs[name], int) or kwargs[name] < 1):
                raise ValueError(f"{name} must be a positive int; got {kwargs[name]!r}")
        return cls(shape, params.kernel_size, params.dilation, params.stride, params.is_causal, **kwargs)

    @classmethod
    def default(cls, rank: int = 2, **kwargs) -> ProfileProblem:
        shape, kernel = DEFAULTS[rank]
        return cls.create(shape, kernel, **kwargs)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def tokens(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def op_args(self) -> tuple[list[int], list[int], list[int], list[bool]]:
        """``kernel_size, dilation, stride, is_causal`` as the ops take them."""
        return list(self.kernel_size), list(self.dilation), list(self.stride), list(self.is_causal)

    def qkv_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.shape, self.heads, self.head_dim)

    def describe(self) -> str:
        causal = "x".join("T" if c else "F" for c in self.is_causal)
        return (
            f"{self.rank}D {axes(self.shape)}, kernel {axes(self.kernel_size)}, dilation {axes(self.dilation)}, "
            f"stride {axes(self.stride)}, causal {causal}; batch {self.batch}, heads {self.heads}, "
            f"head_dim {self.head_dim}, {self.dtype_name}, {self.device}"
        )

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "shape": list(self.shape),
            "kernel_size": list(self.kernel_size),
            "dilation": list(self.dilation),
            "stride": list(self.stride),
            "is_causal": list(self.is_causal),
            "batch": self.batch,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "dtype": self.dtype_name,
            "device": self.device,
            "tokens": self.tokens,
        }

    def inputs(self, requires_grad: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v``: heads-last leaf tensors, the same values for every implementation."""
        gen = torch.Generator().manual_seed(seed)

        def one() -> torch.Tensor:
            t = torch.randn(self.qkv_shape(), generator=gen, dtype=torch.float32)
            return t.to(device=self.device, dtype=self.dtype).requires_grad_(requires_grad)

        return one(), one(), one()

    def useful_flops(self) -> tuple[int, int]:
        """``(forward, backward)`` FLOPs of the fused op (docs/flops.md): forward ``4 * B * H * pairs *
        D`` (``pairs = N * prod(kernel_size)`` without causal masking), backward 2.5x forward."""
        q = self.qkv_shape()
        fwd = flops("na_fused_forward", q, q, q, None, None, None, *self.op_args())
        bwd = flops("na_fused_backward", q, q, q, q, q, q[:-1], None, None, None, None, *self.op_args())
        return fwd, bwd

    def ideal_bytes(self) -> tuple[int, int]:
        """Least memory traffic ``(forward, backward)``: each operand read or written once.

        Forward reads q, k, v and writes out and lse; backward reads q, k, v, out, d_out and lse and
        writes dq, dk, dv. Used for effective GB/s of memory-bound problems.
        """
        item = torch.empty((), dtype=self.dtype).element_size()
        qkv = math.prod(self.qkv_shape()) * item
        lse = self.batch * self.tokens * self.heads * 4
        return 4 * qkv + lse, 8 * qkv + lse
