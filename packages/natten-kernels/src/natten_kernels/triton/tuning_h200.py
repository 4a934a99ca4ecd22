"""Rate tables measured on one NVIDIA H200 (torch 2.11, Triton 3.6; docs/perf-notes.md): how fast each
tile configuration runs, relative to the fastest at its head dim. tiling.py's defaults weigh them
against the exact tile efficiency of a problem, and the autotuner takes them as its candidates. On
another GPU, measure a table of its own (``benchmarks/run.py --suite gpu --sweep``) in a file named
for it.
"""

# (block_q, block_k, num_warps, num_stages, variant(, maxnreg)) -> relative inner-loop rate (pairs computed per
# second; 1.0 = the fastest at that head dim), bf16/fp16 on an H200, averaged over the suite's
# problems of that head dim (docs/perf-notes.md, v2). Variant 1 = TMA loads. Shapes that spilled
# (128x64 or 64x128 with 4 warps at D=128: 4-5x slower) are left out.
FWD_RATES = {
    32: {
        (128, 32, 4, 3, 0): 1.1,
        (128, 64, 4, 3, 0): 1.0,
        (64, 32, 2, 3, 0): 0.95,
        # with a sixth entry, a register cap (v5): 162-168 -> 128 registers (2-4 spilled) fit more
        # programs per SM; measured 7-10% faster on S5's short key loops
        (64, 32, 2, 3, 0, 128): 1.03,
        (32, 32, 1, 3, 0, 128): 0.89,
        # one warp per 32-query tile (v4): more programs per SM where a 7x7 window leaves little work
        (32, 32, 1, 3, 0): 0.81,
        (32, 16, 1, 3, 0): 0.76,
        (64, 64, 4, 3, 0): 0.9,
        (64, 32, 4, 3, 0): 0.84,
        (64, 16, 4, 3, 0): 0.65,
        (32, 32, 2, 3, 0): 0.6,
        (32, 16, 2, 3, 0): 0.6,
        (16, 16, 2, 2, 0): 0.3,
    },
    64: {
        (128, 64, 4, 3, 0): 1.0,
        (64, 64, 4, 3, 0): 0.9,
        (128, 128, 8, 3, 0): 0.81,
        (64, 32, 4, 3, 0): 0.8,
        (64, 32, 4, 2, 0): 0.78,
        (128, 32, 4, 3, 0): 0.76,
        (64, 16, 4, 3, 0): 0.61,
        (32, 32, 2, 3, 0): 0.45,
    },
    128: {
        (128, 128, 8, 3, 1): 1.0,
        (128, 128, 8, 2, 1): 0.93,
        (128, 128, 8, 2, 0): 0.9,
        (128, 128, 8, 3, 0): 0.9,
        (64, 64, 4, 3, 1): 0.88,
        (64, 64, 4, 3, 0): 0.82,
        (128, 64, 8, 3, 0): 0.8,
        (128, 64, 8, 2, 0): 0.77,
        (128, 32, 4, 3, 0): 0.7,
        (64, 32, 4, 3, 0): 0.62,
        (32, 32, 4, 2, 0): 0.28,
    },
    256: {(64, 32, 4, 2, 0): 1.0, (64, 64, 4, 2, 0): 1.0, (32, 32, 4, 2, 0): 0.6, (16, 16, 4, 2, 0): 0.2},
}
# Backward blocks are (resident, streamed): the dq pass keeps a query tile and streams keys, the dk/dv
# pass keeps a key tile and streams queries (4 warps on a 64-row resident tile beat 8 warps on 128).
# Variant 0 is the deterministic backward, variant 1 the KV-parallel one (its own rates: its dk/dv pass
# also issues dq's atomics, which favors a larger resident key tile).
BWD_RATES = {
    64: {
        (128, 32, 4, 2, 0): 1.1,
        (64, 64, 4, 2, 0): 1.0,
        (64, 32, 4, 2, 0): 0.92,
        (64, 32, 4, 3, 0): 0.87,
        (64, 16, 4, 2, 0): 0.71,
        (32, 32, 4, 2, 0): 0.47,
        (32, 16, 4, 2, 0): 0.41,
        (16, 16, 4, 2, 0): 0.3,
    },
    128: {  # v3 (TMA for q/dO in the dk/dv pass): 2 stages best on S1, S2, S6
        (64, 32, 4, 2, 0): 1.0,
        (64, 32, 4, 3, 0): 0.97,
        (64, 64, 4, 2, 0): 0.95,
        (128, 64, 8, 2, 0): 0.94,
        (128, 32, 8, 2, 0): 0.87,
        (64, 16, 4, 2, 0): 0.77,
        (32, 32, 4, 2, 0): 0.51,
    },
    256: {(32, 32, 4, 1, 0): 1.0, (16, 16, 4, 1, 0): 0.4},
}
BWD_KV_RATES = {
    64: {(64, 32, 4, 2, 1): 1.0, (64, 64, 4, 2, 1): 0.95, (128, 32, 4, 2, 1): 0.9, (64, 16, 4, 2, 1): 0.75},
    128: {(128, 64, 8, 2, 1): 1.0, (128, 32, 8, 2, 1): 0.95, (64, 32, 4, 2, 1): 0.75, (64, 16, 4, 2, 1): 0.7},
    256: {(32, 32, 4, 1, 1): 1.0, (16, 16, 4, 1, 1): 0.4},
}
# The dq pass's own default where it was measured (perf-notes, "backward v3"): at head dim 128 the
# forward's 128-query tiles over 64-key tiles with TMA beat the dk/dv pass's blocks (S1 3.02 vs 3.26
# ms, S6 62 vs 80); elsewhere it takes the dk/dv pass's blocks.
DQ_PASS = {128: (128, 64, 8, 3, 1)}
for _table in (BWD_RATES, BWD_KV_RATES):
    _table[32] = _table[64]
RATES = {(False, 0): FWD_RATES, (True, 0): BWD_RATES, (True, 1): BWD_KV_RATES}
# Forward TMA shapes measured with host-built descriptors (no dilation, a head dim that fills its
# block), where they beat pointer loads (v5: S5-d1 0.264 -> 0.237 ms). Through per-program descriptors
# (dilation) TMA lost 13-35% on 7x7 windows, so a default takes these only where the host path
# applies; the autotuner tries them everywhere.
FWD_HOST_TMA_RATES = {32: {(32, 32, 1, 3, 1, 128): 0.99}}
