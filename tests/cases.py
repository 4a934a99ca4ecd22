"""Test problems generated from the backends' declared capabilities, with readable ids."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import torch
from natten_kernels.backends import BACKENDS, Problem

DTYPE_NAMES = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class Case:
    """One problem; dilation, stride and is_causal default to 1, 1 and False on every axis."""

    spatial: tuple[int, ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    is_causal: tuple[bool, ...] | None = None
    rpb: bool = False
    additional: int = 0  # number of additional KV tokens
    heads: int = 2
    kv_heads: int = 2
    head_dim: int = 8
    head_dim_v: int = 8
    batch: int = 2
    dtype: torch.dtype = torch.float64

    def __post_init__(self):
        for name, fill in (("dilation", 1), ("stride", 1), ("is_causal", False)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (fill,) * self.rank)

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def geometry(self) -> tuple:
        """(kernel_size, dilation, stride, is_causal): the reference's positional order."""
        return self.kernel_size, self.dilation, self.stride, self.is_causal

    @property
    def id(self) -> str:
        parts = self.geometry_id_parts()
        if self.head_dim_v != self.head_dim:
            parts.append(f"dv{self.head_dim_v}")
        parts.append(DTYPE_NAMES[self.dtype])
        return "-".join(parts)

    def geometry_id_parts(self) -> list[str]:
        """The id's parts for the geometry, the optional inputs and GQA."""

        def axes(v):
            return "x".join(str(int(x)) for x in v)

        parts = [f"{self.rank}d", f"s{axes(self.spatial)}", f"k{axes(self.kernel_size)}"]
        if any(d > 1 for d in self.dilation):
            parts.append(f"d{axes(self.dilation)}")
        if any(s > 1 for s in self.stride):
            parts.append(f"st{axes(self.stride)}")
        if any(self.is_causal):
            parts.append("causal(" + ",".join("T" if c else "F" for c in self.is_causal) + ")")
        if self.rpb:
            parts.append("rpb")
        if self.additional:
            parts.append(f"addkv{self.additional}")
        if self.kv_heads != self.heads:
            parts.append(f"gqa{self.heads}:{self.kv_heads}")
        return parts

    def features(self) -> frozenset[str]:
        f = set()
        if any(self.is_causal):
            f.add("causal")
        if any(d > 1 for d in self.dilation):
            f.add("dilation")
        if any(s > 1 for s in self.stride):
            f.add("stride")
        if self.rpb:
            f.add("rpb")
        if self.additional:
            f.add("additional_kv")
        if self.kv_heads != self.heads:
            f.add("gqa")
        f.add("backward")
        return frozenset(f)

    def problem(self, family: str, device: str) -> Problem:
        return Problem(family, device, self.dtype, self.rank, self.head_dim, self.head_dim_v, self.features())


def large_case(spatial, kernel_size, *geometry, head_dim: int, dtype: torch.dtype, **kw) -> Case:
    """A problem at scale: one batch, the value head dim that of the keys unless given."""
    kw.setdefault("head_dim_v", head_dim)
    kw.setdefault("batch", 1)
    return Case(spatial, kernel_size, *geometry, head_dim=head_dim, dtype=dtype, **kw)


def _random_case(rng: random.Random, rank: int) -> Case:
    spatial, kernel, dil, stride, causal = [], [], [], [], []
    for _ in range(rank):
        k = rng.choice([2, 3, 4, 5, 7] if rank < 3 else [2, 3, 4])
        d = rng.choice([1, 1, 2, 3])
        # sizes that are not multiples of anything and leave borders on both sides
        n = k * d + rng.randint(0, 9 if rank < 3 else 4)
        s = rng.choice([1, 1, 2, k]) if k > 1 else 1
        spatial.append(n)
        kernel.append(k)
        dil.append(d)
        stride.append(min(s, k))
        causal.append(rng.random() < 0.3)
    return Case(tuple(spatial), tuple(kernel), tuple(dil), tuple(stride), tuple(causal))


def base_cases(seed: int = 0, per_rank: int = 8) -> list[Case]:
    """A fixed set of geometry cases per rank: borders, dilation, stride, causal, even kernels."""
    rng = random.Random(seed)
    cases = [
        Case((9,), (3,), (1,), (1,), (False,)),
        Case((16,), (4,), (2,), (1,), (True,)),
        Case((8, 10), (3, 5), (2, 1), (1, 1), (False, False)),
        Case((7, 9), (4, 3), (1, 2), (2, 3), (True, False)),
        Case((5, 6, 7), (3, 2, 3), (1, 2, 1), (1, 1, 3), (True, False, True)),
        Case((12,), (12,), (1,), (1,), (False,)),  # full attention
        Case((12,), (4,), (1,), (4,), (False,)),  # blocked attention
    ]
    for rank in (1, 2, 3):
        cases += [_random_case(rng, rank) for _ in range(per_rank)]
    return cases


def with_features(case: Case, rng: random.Random) -> Case:
    """Randomly add rpb (when legal), additional KV, GQA and a different value head dim."""
    c = case
    if not any(c.is_causal) and all(k % 2 for k in c.kernel_size) and rng.random() < 0.5:
        c = replace(c, rpb=True)
    if rng.random() < 0.3:
        c = replace(c, additional=rng.choice([1, 3]))
    if rng.random() < 0.3:
        c = replace(c, heads=4, kv_heads=rng.choice([1, 2]))
    if rng.random() < 0.2:
        c = replace(c, head_dim_v=12)
    return c


def supported(case: Case, family: str, device: str, backend=None) -> bool:
    """Whether ``backend`` (any registered backend when None) declares what ``case`` needs."""
    return any(b.refusal(case.problem(family, device)) is None for b in ([backend] if backend else BACKENDS))


def fused_cases(
    device: str = "cpu", dtypes=(torch.float64, torch.float32, torch.float16, torch.bfloat16), backend=None
) -> list[Case]:
    """The fused cases ``backend`` (or any backend) declares it can run on ``device``."""
    rng = random.Random(1)
    out = []
    for case, dtype in zip(base_cases(), itertools.cycle(dtypes)):
        c = replace(with_features(case, rng), dtype=dtype)
        if supported(c, "fused", device, backend):
            out.append(c)
    return out


def usable_backends(family: str, device: str) -> list:
    """The registered backends of ``family`` that can run on ``device`` in this process."""
    return [b for b in BACKENDS if family in b.families and device in b.devices and b.unavailable_reason() is None]


def unfused_cases(device: str = "cpu", dtypes=(torch.float64, torch.float32)) -> list[Case]:
    rng = random.Random(2)
    out = []
    for case, dtype in zip(base_cases(seed=3), itertools.cycle(dtypes)):
        c = with_features(case, rng)
        c = replace(c, dtype=dtype, heads=c.kv_heads, head_dim_v=c.head_dim)  # unfused: no GQA, one head dim
        if supported(c, "unfused", device):
            out.append(c)
    return out
