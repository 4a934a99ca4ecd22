"""The Triton unfused backends (natten_kernels/triton/unfused_*): qk / av and their backward on CUDA.

One set of kernels, two variants chosen through the ops' ``config`` (triton/unfused_ops.py):

* ``triton-unfused-gemm`` (kind "gemm"): ``tl.dot`` on tensor cores; float16, bfloat16, float32 (TF32
  only where torch allows TF32 matmuls). There are no float64 tensor-core kernels.
* ``triton-unfused-exact`` (no kind): CUDA-core float32 / float64 arithmetic for every dtype; what
  ``disable_gemm_na()`` leaves. There is no separate tiled / non-tiled pair, so ``disable_tiled_na()``
  changes nothing here.
"""

from __future__ import annotations

import dataclasses

from natten_kernels.backends.base import FEATURES, FLOAT_DTYPES, Backend
from natten_kernels.backends.triton import TENSOR_CORE_CUDA, unavailable_reason
from natten_kernels.ops.names import UNFUSED_OPS
from natten_kernels.triton.variants import EXACT, GEMM

# Both variants run the same kernels (their config picks the variant).
_KERNELS = {name: f"natten_kernels.triton.unfused_ops:{name}" for name in UNFUSED_OPS}
# heads of q and k must match in the unfused ops; additional tokens are dense matmuls in natten
_FEATURES = frozenset(FEATURES) - {"gqa", "query_box"}

TRITON_UNFUSED_GEMM = Backend(
    name="triton-unfused-gemm",
    families=frozenset({"unfused"}),
    features=_FEATURES,
    unavailable_reason=unavailable_reason,
    unfused_config=(GEMM,),
    kernels=_KERNELS,
    **TENSOR_CORE_CUDA,
)

# the same kernels and devices; CUDA-core arithmetic takes float64 too and is not a "gemm" kind
TRITON_UNFUSED_EXACT = dataclasses.replace(
    TRITON_UNFUSED_GEMM,
    name="triton-unfused-exact",
    dtypes=FLOAT_DTYPES,
    kinds=frozenset(),
    unfused_config=(EXACT,),
)
