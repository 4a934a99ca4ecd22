"""The Triton unfused backends (natten_kernels/triton/unfused_*): qk / av and their backward on CUDA.

One set of kernels, two variants chosen through the ops' ``config`` (triton/unfused_ops.py):

* ``triton-unfused-gemm`` (kind "gemm"): ``tl.dot`` on tensor cores; float16, bfloat16, float32 (TF32
  only where torch allows TF32 matmuls). There are no float64 tensor-core kernels.
* ``triton-unfused-exact`` (no kind): CUDA-core float32 / float64 arithmetic for every dtype; what
  ``disable_gemm_na()`` leaves. There is no separate tiled / non-tiled pair, so ``disable_tiled_na()``
  changes nothing here.
"""

from __future__ import annotations

import torch

from natten_kernels.backends.base import FEATURES, Backend
from natten_kernels.backends.triton import MIN_CC, unavailable_reason
from natten_kernels.ops.names import UNFUSED_OPS
from natten_kernels.triton.variants import EXACT, GEMM

# Both variants run the same kernels (their config picks the variant).
_KERNELS = {name: f"natten_kernels.triton.unfused_ops:{name}" for name in UNFUSED_OPS}
# heads of q and k must match in the unfused ops; additional tokens are dense matmuls in natten
_FEATURES = frozenset(FEATURES) - {"gqa"}

TRITON_UNFUSED_GEMM = Backend(
    name="triton-unfused-gemm",
    families=frozenset({"unfused"}),
    devices=frozenset({"cuda"}),
    dtypes=frozenset({torch.float16, torch.bfloat16, torch.float32}),
    features=_FEATURES,
    kinds=frozenset({"gemm"}),
    min_compute_capability=MIN_CC,
    unavailable_reason=unavailable_reason,
    unfused_config=(GEMM,),
    kernels=_KERNELS,
)

TRITON_UNFUSED_EXACT = Backend(
    name="triton-unfused-exact",
    families=frozenset({"unfused"}),
    devices=frozenset({"cuda"}),
    dtypes=frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64}),
    features=_FEATURES,
    min_compute_capability=MIN_CC,
    unavailable_reason=unavailable_reason,
    unfused_config=(EXACT,),
    kernels=_KERNELS,
)
