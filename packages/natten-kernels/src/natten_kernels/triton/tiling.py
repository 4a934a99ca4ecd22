"""Tile shapes and configurations (pure Python): how a block of BLOCK tokens becomes a box over the
rank-3 view, how many of the (query, key) pairs a choice of boxes computes are useful, and which
``[block_q, block_k, num_warps, num_stages]`` a problem gets by default.

The default maximizes ``tile efficiency x relative inner-loop rate``: the efficiency is exact (from
the windows, :func:`tile_efficiency`); the rates are per head dim and tile shape, measured on an H200
(tuning_h200.py; docs/perf-notes.md). Large windows keep 128-row tiles; small
windows (7x7, 13x13) trade the larger tiles' speed for far fewer wasted pairs.
"""

from __future__ import annotations

import functools
import math

from natten_kernels.triton.tuning_h200 import DQ_PASS as _DQ_PASS
from natten_kernels.triton.tuning_h200 import FWD_HOST_TMA_RATES as _FWD_HOST_TMA_RATES
from natten_kernels.triton.tuning_h200 import RATES as _RATES
from natten_kernels.window import axis_pairs, group_lengths
from natten_kernels.window import window as _window


def pow2_at_least(x: int) -> int:
    """The smallest power of two >= ``x`` (>= 1). Plain Python: ``triton.next_power_of_2`` goes through a
    JIT wrapper that costs microseconds on every launch."""
    return 1 << max(0, (int(x) - 1).bit_length())


def _pad3(values, fill) -> tuple:
    values = tuple(values)
    return (fill,) * (3 - len(values)) + values


def box(
    block: int, extent: tuple[int, int, int], kernel: tuple[int, int, int], align: tuple[int, int, int] | None = None
) -> tuple[int, int, int]:
    """A power-of-two box of ``block`` tokens shaped like the kernel window.

    Axes grow (doubling) where the box is smallest relative to the kernel, never past the next
    power of two of the axis extent. With ``align`` (per-axis sizes such as the kernel or the stride),
    a first pass grows only axes whose doubled size still divides the alignment, so tiles line up
    with windows and stride blocks (perfectly block-sparse problems then need no mask at all).
    """
    dims = [1, 1, 1]
    cap = [pow2_at_least(e) for e in extent]
    target = int(math.log2(block))

    def grow(require_align: bool) -> bool:
        best = None
        for a in (2, 1, 0):  # ties go to the innermost (contiguous) axis
            if dims[a] * 2 > cap[a]:
                continue
            if require_align and (align is None or align[a] <= 1 or align[a] % (dims[a] * 2)):
                continue
            ratio = dims[a] / max(kernel[a], 1)
            if best is None or ratio < best[0]:
                best = (ratio, a)
        if best is None:
            return False
        dims[best[1]] *= 2
        return True

    steps = 0
    while steps < target and align is not None and grow(True):
        steps += 1
    while steps < target and grow(False):
        steps += 1
    while steps < target:  # tiny problem: the dot still needs >= 16 rows; the extra rows are masked
        dims[2] *= 2
        steps += 1
    return dims[0], dims[1], dims[2]


def tile_shapes(
    kernel_size, dilation, stride, spatial, block_q: int, block_k: int, is_causal=None, search=True, queries=None
):
    """Query and key boxes over the rank-3 view (per-axis sizes) for a problem and two block sizes.

    :func:`box` proposes a shape per block; with ``search``, every other power-of-two box of the same
    size is tried, the query box first and then the key box, and one that computes at least 1% fewer
    pairs (:func:`tile_efficiency`) replaces the proposal: the proposal can leave whole rows of padding
    on a short axis (S6 with stride 16x8x8: a 4x4x8 query box pads 30 frames to 32, 2x8x8 pads none).
    The efficiency counts the pairs of query-major loops (forward, dq pass); the dk/dv pass, which
    walks each key tile's inverse neighborhood, keeps the proposal (``search=False``): shapes chosen
    for the query-major count made it up to 1.5x slower (S2). ``queries = (offset, extent)``: the
    queries are that box of the grid (a shard inside its halo): its own tiles and pairs count (a
    rank-thin box takes thin tiles)."""
    args = tuple(tuple(_pad3(x, f)) for x, f in ((kernel_size, 1), (dilation, 1), (stride, 1), (spatial, 1)))
    causal = tuple(_pad3(is_causal if is_causal is not None else (), False))
    box_ = None if queries is None else (tuple(_pad3(queries[0], 0)), tuple(_pad3(queries[1], 1)))
    return _tile_shapes(*args, tuple(bool(c) for c in causal), int(block_q), int(block_k), bool(search), box_)


@functools.lru_cache(maxsize=1024)
def _tile_shapes(ks, dl, st, L, causal, block_q, block_k, search, queries=None):
    nmax = tuple(-(-L[a] // dl[a]) for a in range(3))
    nq = nmax if queries is None else tuple(-(-queries[1][a] // dl[a]) for a in range(3))
    qbox = box(block_q, nq, ks, align=st if any(s > 1 for s in st) else None)
    kbox = box(block_k, nmax, ks, align=ks)
    if not search:
        return qbox, kbox

    def eff(q, k):
        return tile_efficiency(L, ks, dl, st, causal, q, k, queries)

    best = eff(qbox, kbox)
    for which in (0, 1):
        for cand in _boxes_of(block_q if which == 0 else block_k, nq if which == 0 else nmax):
            q, k = (cand, kbox) if which == 0 else (qbox, cand)
            e = eff(q, k)
            if e > best * 1.01:
                qbox, kbox, best = q, k, e
    return qbox, kbox


def _boxes_of(block: int, nmax) -> list[tuple[int, int, int]]:
    """Every power-of-two box of ``block`` tokens that fits the axes' next powers of two."""
    e = int(math.log2(block))
    cap = [pow2_at_least(n) for n in nmax]
    out = []
    for a0 in range(e + 1):
        for a1 in range(e + 1 - a0):
            b = (1 << a0, 1 << a1, 1 << (e - a0 - a1))
            if all(b[i] <= cap[i] for i in range(3)):
                out.append(b)
    return out


@functools.lru_cache(maxsize=4096)
def _axis_pairs(
    length: int, k: int, d: int, s: int, causal: bool, t: int, kb: int, first: int = 0, count: int | None = None
) -> tuple[int, int]:
    """(useful, computed) (query, key) pairs on one axis: queries in boxes of ``t``, keys in boxes of ``kb``
    (queries ``[first, first + count)`` only, their tiles starting at each group's first: the kernels')."""
    stop = length if count is None else first + count
    useful, computed = axis_pairs(length, k, d, s, causal, None if count is None else (first, stop)), 0
    for g, n in enumerate(group_lengths(length, d)):
        qs, qe = -(-(first - g) // d), -(-(stop - g) // d)
        for q0 in range(qs, qe, t):
            lo = _window(q0, n, k, s, causal)[0]
            hi = _window(min(q0 + t, qe) - 1, n, k, s, causal)[1]
            computed += t * -(-(hi - lo) // kb) * kb
    return useful, computed


def tile_efficiency(spatial, kernel_size, dilation, stride, is_causal, qbox, kbox, queries=None) -> float:
    """Useful (query, key) pairs / pairs the kernels compute with these boxes (padded rows included);
    ``queries = (offset, extent)``: of that box of queries only."""
    args = (_pad3(spatial, 1), _pad3(kernel_size, 1), _pad3(dilation, 1), _pad3(stride, 1), _pad3(is_causal, False))
    box_ = ((0, 0, 0), (None,) * 3) if queries is None else (_pad3(queries[0], 0), _pad3(queries[1], 1))
    useful = computed = 1
    for a in range(3):
        u, c = _axis_pairs(*(x[a] for x in args), qbox[a], kbox[a], box_[0][a], box_[1][a])
        useful *= u
        computed *= c
    return useful / computed


# the autotuner's candidates per head-dim bucket, fastest first (plain lists: torch.compile traces
# the backend's config functions)


def _rates(bucket: int, backward: bool, kv_parallel: bool, host_tma: bool = True) -> dict:
    """The measured rates of a head-dim bucket (``host_tma``: with the host-descriptor TMA shapes)."""
    rates = _RATES[backward, int(backward and kv_parallel)][bucket]
    if not backward and host_tma:
        rates = {**rates, **_FWD_HOST_TMA_RATES.get(bucket, {})}
    return rates


_CANDIDATES = {
    key: {b: [list(c) for c in sorted(r, key=r.get, reverse=True)] for b in table for r in [_rates(b, *key)]}
    for key, table in _RATES.items()
}


def _bucket(head_dim: int) -> int:
    for b in (32, 64, 128):
        if head_dim <= b:
            return b
    return 256


# the whole-group forward (fused_forward_groups.py) holds a group's scores in registers and its q, k, v
# tiles in shared memory: at most this many tokens per group and bytes of one stage of tiles
GROUP_MAX_TOKENS = 128
GROUP_MAX_STAGE_BYTES = 96 * 1024
GROUP_VARIANT = 2  # its forward config variant


def _group_stage_bytes(tokens: int, head_dim: int, dtype_bytes: int) -> int:
    return 3 * max(16, pow2_at_least(tokens)) * max(16, pow2_at_least(head_dim)) * dtype_bytes


def whole_groups(spatial, kernel_size, dilation, is_causal, head_dim: int, dtype_bytes: int) -> int:
    """Tokens per dilation group when every window is its whole group (per axis ``extent == kernel
    size * dilation``, not causal; stride changes nothing then) and the group-wise forward can hold
    it (:data:`GROUP_MAX_TOKENS`, :data:`GROUP_MAX_STAGE_BYTES`); else 0."""
    axes = zip(_pad3(spatial, 1), _pad3(kernel_size, 1), _pad3(dilation, 1), _pad3(is_causal or (), False))
    if any(n != k * d or c for n, k, d, c in axes):
        return 0
    tokens = math.prod(kernel_size)
    fits = tokens <= GROUP_MAX_TOKENS and _group_stage_bytes(tokens, head_dim, dtype_bytes) <= GROUP_MAX_STAGE_BYTES
    return tokens if fits else 0


def group_config(tokens: int, head_dim: int, dtype_bytes: int) -> list[int]:
    """The whole-group forward's default ``[block, block, num_warps, num_stages, 2, maxnreg]``: one
    tile of the group's tokens (the blocks say nothing else to that kernel), a warp per 32 rows (16
    above head dim 32), loads pipelined one item ahead where two stages fit, and a register cap of
    128 on the small tiles (perf notes v6: S5 with dilation 8 0.150 -> 0.147 ms, a 3D 3x3x3 group
    at head dim 64 0.097 -> 0.078)."""
    block = max(16, pow2_at_least(tokens))
    warps = max(1, min(8, block // (32 if head_dim <= 32 else 16)))
    stages = 2 if 2 * _group_stage_bytes(tokens, head_dim, dtype_bytes) <= GROUP_MAX_STAGE_BYTES else 1
    # float32 scores and output per thread; at most 96 fit under the cap without spilling
    per_thread = block * (block + max(16, pow2_at_least(head_dim))) // (32 * warps)
    return [block, block, warps, stages, GROUP_VARIANT, 128 if per_thread <= 96 else 0]


@functools.lru_cache(maxsize=1024)
def choose_config(
    head_dim,
    dtype_bytes,
    spatial,
    kernel_size,
    dilation,
    stride,
    is_causal,
    backward=False,
    kv_parallel=False,
    queries=None,
):
    """The default ``[block_q, block_k, num_warps, num_stages, variant]`` of one problem (all tuples):
    the largest relative rate x tile efficiency (``kv_parallel``: among the KV-parallel backwards;
    ``queries = (offset, extent)``: the efficiency of that box of queries, see tile_shapes).
    A deterministic backward may add its dq pass's own five entries (:data:`_DQ_PASS`). A forward
    whose windows are whole dilation groups gets the group-wise kernel (:func:`group_config`), unless
    its queries are a box."""
    whole = backward or queries is not None
    tokens = 0 if whole else whole_groups(spatial, kernel_size, dilation, is_causal, head_dim, dtype_bytes)
    if tokens:
        return group_config(tokens, head_dim, dtype_bytes)
    best, _score = _best_rated(
        head_dim, spatial, kernel_size, dilation, stride, is_causal, backward, kv_parallel, queries
    )
    cfg = fit_shared_memory(list(best), head_dim, dtype_bytes, backward)
    dq = _DQ_PASS.get(_bucket(head_dim)) if backward and not kv_parallel else None
    if dq is not None:
        cfg += fit_shared_memory(list(dq), head_dim, dtype_bytes, True)
    return cfg


def _best_rated(head_dim, spatial, kernel_size, dilation, stride, is_causal, backward, kv_parallel, queries):
    """The measured config of the largest rate x tile efficiency, and that score."""
    host_tma = all(d == 1 for d in dilation) and head_dim == max(16, pow2_at_least(head_dim))
    rates = _rates(_bucket(head_dim), backward, kv_parallel, host_tma)
    best, best_score = None, -1.0
    for cfg, rate in rates.items():
        qbox, kbox = tile_shapes(
            kernel_size, dilation, stride, spatial, cfg[0], cfg[1], is_causal, not backward, queries
        )
        score = rate * tile_efficiency(spatial, kernel_size, dilation, stride, is_causal, qbox, kbox, queries)
        if score > best_score:
            best, best_score = cfg, score
    return best, best_score


# a cut must save this share of a box's modelled time: each piece is one more launch, with its own tail
CUT_GAIN = 0.02


@functools.lru_cache(maxsize=1024)
def remainder_cuts(head_dim, spatial, kernel_size, dilation, stride, is_causal, queries):
    """A forward query box ``queries = (offset, extent)`` as one or two boxes: cut across one axis where
    whole tiles end (``extent // t * t`` for a power of two ``t``) when the two boxes' best configs
    compute the box in ``CUT_GAIN`` less modelled time (pairs computed / rate) than one launch.
    A 7-frame shard of S6-s (stride 16 x 8 x 8) runs 1-frame tiles across two stride blocks (0.90 of
    its pairs useful); cut 6 + 1, the six take 2-frame tiles that fit the blocks (1.00)."""

    def time(box) -> float:
        _cfg, score = _best_rated(head_dim, spatial, kernel_size, dilation, stride, is_causal, False, False, box)
        useful = math.prod(
            axis_pairs(n, k, d, s, c, (o, o + e))
            for n, k, d, s, c, o, e in zip(spatial, kernel_size, dilation, stride, is_causal, *box)
        )
        return useful / score

    offset, extent = queries
    best, best_time = [queries], time(queries) * (1 - CUT_GAIN)
    for a, n in enumerate(extent):
        t = 2
        while t < n:
            cut = n // t * t
            if cut < n:
                head = (offset, tuple(cut if x == a else e for x, e in enumerate(extent)))
                tail = (tuple(o + cut if x == a else o for x, o in enumerate(offset)),
                        tuple(n - cut if x == a else e for x, e in enumerate(extent)))  # fmt: skip
                t_cut = time(head) + time(tail)
                if t_cut < best_time:
                    best, best_time = [head, tail], t_cut
            t *= 2
    return best


def candidates(head_dim: int, backward: bool = False, kv_parallel: bool = False) -> list[list[int]]:
    """The autotuner's candidates for a head dim, fastest first (copies)."""
    return [list(c) for c in _CANDIDATES[backward, int(backward and kv_parallel)][_bucket(head_dim)]]


def fit_shared_memory(cfg: list[int], head_dim: int, dtype_bytes: int, backward: bool, limit: int = 227 * 1024):
    """Shrink a config until its tiles fit in ``limit`` bytes of shared memory: stages down to 2, then
    the streamed block down to 32, then stages, then the other block. fp32 tiles take twice the room
    of fp16/bf16 ones, so a config chosen for fp16 stays launchable in fp32. The estimate (resident
    tiles plus ``num_stages`` buffers of each streamed tile) matched Triton's sm_90 allocation exactly
    for the forward; the backward (two resident and two streamed tiles) gets 10% for its transposes."""
    bq, bk, warps, stages, *variant = cfg
    d = pow2_at_least(max(head_dim, 16))

    def size():
        if not backward:  # q resident, k and v streamed
            return dtype_bytes * d * (bq + 2 * stages * bk)
        return 1.1 * dtype_bytes * d * 2 * (bq + stages * bk)  # (q, do) or (k, v) resident

    while size() > limit:
        if stages > 2:
            stages -= 1
        elif bk > 32:
            bk //= 2
        elif stages > 1:
            stages -= 1
        elif max(bq, bk) > 16:
            bq, bk = (bq // 2, bk) if bq >= bk else (bq, bk // 2)
        else:
            break
    return [bq, bk, warps, stages, *variant]
