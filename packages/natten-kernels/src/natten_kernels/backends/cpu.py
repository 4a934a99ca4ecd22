"""The compiled C++ CPU backend (csrc/cpu)."""

from __future__ import annotations

from typing import Any

import torch

from natten_kernels import _library
from natten_kernels.backends.base import FEATURES, FLOAT_DTYPES, Backend, TuningInfo

# Most per-split dk/dv accumulators KV parallelism may allocate, per thread, by memory preference.
_SPLITS_PER_THREAD = {"strict": 1, "default": 4, "unrestricted": 16}


def forward_configs(info: TuningInfo) -> list[list[int]]:
    """``[query_block]``: queries per parallel task; ``[]`` is the kernel's own choice."""
    return [[], [8], [32], [128]]


def backward_configs(info: TuningInfo) -> list[list[int]]:
    """``[splits]``: each split of the queries accumulates its own dk/dv, reduced in a fixed order.

    Without KV parallelism the kernel decides (one split unless (batch, kv head) tasks leave threads
    idle), or uses exactly one under the "strict" memory preference. With it, splits fill the threads
    several times over, as far as the memory preference allows.
    """
    if not info.kv_parallel:
        return [[1]] if info.memory_preference == "strict" else [[], [1]]
    threads = torch.get_num_threads()
    tasks = max(info.batch * info.kv_heads, 1)
    cap = max(2, _SPLITS_PER_THREAD[info.memory_preference] * threads)
    wanted = min(cap, max(2, -(-4 * threads // tasks)))
    return [[wanted]] + [[s] for s in (1, 2, 4, 8) if s < wanted]


# What the compiled library's ops cover, on the CPU (its kernels) and on the meta device (their fake
# implementations, backends/meta.py): every family, feature and float dtype, once the library loaded;
# a query box only as shapes (the CPU kernels run queries and keys on one grid).
LIBRARY_OPS: dict[str, Any] = dict(
    families=frozenset({"fused", "unfused"}),
    dtypes=FLOAT_DTYPES,
    features=frozenset(FEATURES),
    unavailable_reason=_library.load_error,
)

CPU = Backend(
    name="cpu",
    devices=frozenset({"cpu"}),
    forward_configs=forward_configs,
    backward_configs=backward_configs,
    **{**LIBRARY_OPS, "features": LIBRARY_OPS["features"] - {"query_box"}},
)
