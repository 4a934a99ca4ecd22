"""Kernel variants of the unfused ops, as their ``config[0]`` (no triton import: backends use these)."""

EXACT = 0  # CUDA-core float32 / float64 arithmetic (what disable_gemm_na() leaves)
GEMM = 1  # tl.dot on tensor cores
