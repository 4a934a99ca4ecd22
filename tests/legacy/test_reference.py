"""The reference oracle checked against an independent brute-force loop and known facts.

The loop implementation below is written from the docs/semantics.md text, one query at a time, with
Python integers (no tensor index tables), so it shares no code with ``natten_legacy.reference``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from natten_legacy.reference import na_av_reference, na_qk_reference, na_reference, neighborhood_slots
from natten_legacy.testing import assert_close

F64 = torch.float64
TOL = dict(atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------------------------------
# Brute force from the §3 text.
# --------------------------------------------------------------------------------------------------


def loop_axis_slots(i: int, L: int, k: int, d: int, s: int, causal: bool) -> list[tuple[int, bool]]:
    """(global key, valid) of each slot t of query i on one axis, straight from §3."""
    g = i % d
    p = i // d
    n = math.ceil((L - g) / d)
    left = k // 2
    if causal:
        c = min((p // s) * s + s - 1, n - 1)
        first = max(c - k + 1, 0)  # keys first .. p
        return [(g + (first + t) * d, first + t <= p) for t in range(k)]
    c = min((p // s) * s + s // 2, n - 1)
    start = min(max(c - left, 0), n - k)
    return [(g + (start + t) * d, True) for t in range(k)]


def loop_slots(idx, S, kernel, dil, stride, causal):
    """Slots of a multi-dimensional query, row-major over kernel axes: (key index tuple, valid)."""
    per_axis = [loop_axis_slots(i, L, k, d, s, c) for i, L, k, d, s, c in zip(idx, S, kernel, dil, stride, causal)]
    return [(tuple(key for key, _ in combo), all(v for _, v in combo)) for combo in itertools.product(*per_axis)]


def loop_bias(rpb, h, idx, key, kernel, dil):
    return rpb[(h, *((k - 1) + (j - i) // d for i, j, k, d in zip(idx, key, kernel, dil)))]


def loop_na(q, k, v, kernel, dil, stride, causal, rpb=None, scale=None, add_k=None, add_v=None):
    """Fused NA, heads-last, one (query, head) at a time. Returns (out, lse)."""
    B, *S, Hq, D = q.shape
    Hkv, Dv = k.shape[-2], v.shape[-1]
    scale = D**-0.5 if scale is None else scale
    out_rows, lse_rows = {}, {}
    for idx in itertools.product(*map(range, S)):
        keys = [key for key, ok in loop_slots(idx, S, kernel, dil, stride, causal) if ok]
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            qi = q[(slice(None), *idx, h)]  # [B, D]
            kk = torch.stack([k[(slice(None), *key, hk)] for key in keys], 1)  # [B, n, D]
            vv = torch.stack([v[(slice(None), *key, hk)] for key in keys], 1)
            logits = scale * (kk @ qi[:, :, None]).squeeze(-1)
            if rpb is not None:
                logits = logits + torch.stack([loop_bias(rpb, h, idx, key, kernel, dil) for key in keys])
            if add_k is not None:
                logits = torch.cat([logits, scale * (add_k[:, :, hk] @ qi[:, :, None]).squeeze(-1)], 1)
                vv = torch.cat([vv, add_v[:, :, hk]], 1)
            p = torch.softmax(logits, -1)
            out_rows[(*idx, h)] = (p[:, :, None] * vv).sum(1)
            lse_rows[(*idx, h)] = torch.logsumexp(logits, -1)
    # Assemble with stack (not in-place writes) so that autograd flows through the loop version too.
    keys_order = sorted(out_rows)
    out = torch.stack([out_rows[key] for key in keys_order], 1).reshape(B, *S, Hq, Dv)
    lse = torch.stack([lse_rows[key] for key in keys_order], 1).reshape(B, *S, Hq)
    return out, lse


def loop_qk(q, k, kernel, dil, stride, causal, rpb=None, add_k=None):
    """Unfused QK, heads-first, per slot."""
    B, H, *S, _ = q.shape
    rows = []
    for h in range(H):
        for idx in itertools.product(*map(range, S)):
            qi = q[(slice(None), h, *idx)]
            row = []
            for key, ok in loop_slots(idx, S, kernel, dil, stride, causal):
                if not ok:
                    row.append(torch.full((B,), float("-inf"), dtype=q.dtype))
                    continue
                val = (qi * k[(slice(None), h, *key)]).sum(-1)
                if rpb is not None:
                    val = val + loop_bias(rpb, h, idx, key, kernel, dil)
                row.append(val)
            if add_k is not None:
                row.extend((qi * add_k[:, h, j]).sum(-1) for j in range(add_k.shape[2]))
            rows.append(torch.stack(row, -1))
    return torch.stack(rows, 1).reshape(B, H, *S, -1)


def loop_av(attn, v, kernel, dil, stride, causal, add_v=None):
    """Unfused AV, heads-first, per slot; invalid slots skipped."""
    B, H, *S, Dv = v.shape
    rows = []
    for h in range(H):
        for idx in itertools.product(*map(range, S)):
            acc = torch.zeros(B, Dv, dtype=v.dtype)
            slots = loop_slots(idx, S, kernel, dil, stride, causal)
            a = attn[(slice(None), h, *idx)]
            for t, (key, ok) in enumerate(slots):
                if ok:
                    acc = acc + a[:, t, None] * v[(slice(None), h, *key)]
            if add_v is not None:
                acc = acc + (a[:, len(slots) :, None] * add_v[:, h]).sum(1)
            rows.append(acc)
    return torch.stack(rows, 1).reshape(B, H, *S, Dv)


# --------------------------------------------------------------------------------------------------
# Cases: (spatial, kernel, dilation, stride, causal). Ids are readable.
# --------------------------------------------------------------------------------------------------

CASES = {
    "1d-k3": ((9,), (3,), (1,), (1,), (False,)),
    "1d-k4-even": ((10,), (4,), (1,), (1,), (False,)),
    "1d-k3-d2-uneven-groups": ((9,), (3,), (2,), (1,), (False,)),
    "1d-k5-s2": ((11,), (5,), (1,), (2,), (False,)),
    "1d-k3-s3-blocked": ((9,), (3,), (1,), (3,), (False,)),
    "1d-k3-s3-border": ((10,), (3,), (1,), (3,), (False,)),
    "1d-k4-s3-d2": ((13,), (4,), (2,), (3,), (False,)),
    "1d-k3-causal": ((9,), (3,), (1,), (1,), (True,)),
    "1d-k4-s2-causal": ((11,), (4,), (1,), (2,), (True,)),
    "1d-k3-d3-s2-causal": ((11,), (3,), (3,), (2,), (True,)),
    "2d-k3x4-d2x2": ((7, 8), (3, 4), (2, 2), (1, 1), (False, False)),
    "2d-k3x3-causal(T,F)": ((5, 6), (3, 3), (1, 1), (1, 1), (True, False)),
    "2d-k4x3-s(2,3)-causal(F,T)": ((7, 6), (4, 3), (1, 2), (2, 3), (False, True)),
    "3d-k2x3x3-d(1,1,2)-s(1,2,3)-causal(T,F,F)": ((3, 4, 6), (2, 3, 3), (1, 1, 2), (1, 2, 3), (True, False, False)),
    "3d-k3x2x2-s(3,2,1)": ((4, 3, 5), (3, 2, 2), (1, 1, 2), (3, 2, 1), (False, False, False)),
}
RPB_CASES = {  # odd kernels, non-causal
    "1d-k5-d2-s2-rpb": ((11,), (5,), (2,), (2,), (False,)),
    "2d-k3x5-d(2,1)-rpb": ((7, 6), (3, 5), (2, 1), (1, 1), (False, False)),
    "3d-k3x3x3-s(1,3,2)-rpb": ((3, 4, 5), (3, 3, 3), (1, 1, 1), (1, 3, 2), (False, False, False)),
}


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def qkv(S, Hq=2, Hkv=2, D=4, Dv=3, B=2, seed=0):
    return rand(B, *S, Hq, D, seed=seed), rand(B, *S, Hkv, D, seed=seed + 1), rand(B, *S, Hkv, Dv, seed=seed + 2)


# --------------------------------------------------------------------------------------------------
# Slot tables.
# --------------------------------------------------------------------------------------------------


def test_neighborhood_slots_exhaustive():
    """Every small (L, k, d, s, causal), every query and slot, against the loop version."""
    count = 0
    for L in range(1, 14):
        for k in range(1, L + 1):
            for d in range(1, L // k + 1):
                for s in range(1, k + 1):
                    for causal in (False, True):
                        keys, valid = neighborhood_slots(L, k, d, s, causal)
                        assert keys.shape == valid.shape == (L, k)
                        assert keys.dtype == torch.long and valid.dtype == torch.bool
                        assert int(keys.min()) >= 0 and int(keys.max()) < L
                        for i in range(L):
                            expect = loop_axis_slots(i, L, k, d, s, causal)
                            got = list(zip(keys[i].tolist(), valid[i].tolist()))
                            assert got == expect, (L, k, d, s, causal, i)
                        count += 1
    assert count > 500


@pytest.mark.parametrize(
    "args", [(5, 3, 2, 1, False), (5, 2, 1, 3, False), (5, 2, 1, 0, False), (0, 1, 1, 1, False), (5, 0, 1, 1, True)]
)
def test_neighborhood_slots_rejects_bad_parameters(args):
    with pytest.raises(ValueError):
        neighborhood_slots(*args)


# --------------------------------------------------------------------------------------------------
# Fused reference vs loop.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fused_matches_loop(case):
    S, kernel, dil, stride, causal = CASES[case]
    q, k, v = qkv(S)
    out, lse = na_reference(q, k, v, kernel, dil, stride, causal, return_lse=True)
    out_l, lse_l = loop_na(q, k, v, kernel, dil, stride, causal)
    assert out.shape == (2, *S, 2, 3) and lse.shape == (2, *S, 2)
    assert_close(out, out_l, name="out", **TOL)
    assert_close(lse, lse_l, name="lse", **TOL)


@pytest.mark.parametrize("case", list(RPB_CASES), ids=list(RPB_CASES))
def test_fused_rpb_matches_loop(case):
    S, kernel, dil, stride, causal = RPB_CASES[case]
    q, k, v = qkv(S, seed=3)
    rpb = rand(2, *(2 * kk - 1 for kk in kernel), seed=9)
    out, lse = na_reference(q, k, v, kernel, dil, stride, causal, rpb=rpb, scale=0.7, return_lse=True)
    out_l, lse_l = loop_na(q, k, v, kernel, dil, stride, causal, rpb=rpb, scale=0.7)
    assert_close(out, out_l, name="out", **TOL)
    assert_close(lse, lse_l, name="lse", **TOL)


@pytest.mark.parametrize("hkv", [1, 2, 4])
@pytest.mark.parametrize("case", ["1d-k4-s2-causal", "2d-k3x3-causal(T,F)"])
def test_fused_gqa_additional_kv_matches_loop(case, hkv):
    S, kernel, dil, stride, causal = CASES[case]
    q, k, v = qkv(S, Hq=4, Hkv=hkv, seed=5)
    add_k, add_v = rand(2, 3, hkv, 4, seed=11), rand(2, 3, hkv, 3, seed=12)
    out, lse = na_reference(
        q, k, v, kernel, dil, stride, causal, additional_keys=add_k, additional_values=add_v, return_lse=True
    )
    out_l, lse_l = loop_na(q, k, v, kernel, dil, stride, causal, add_k=add_k, add_v=add_v)
    assert_close(out, out_l, name="out", **TOL)
    assert_close(lse, lse_l, name="lse", **TOL)


def test_fused_gradients_match_loop():
    """Autograd through the reference equals autograd through the loop (q, k, v, rpb, extra KV, lse)."""
    S, kernel, dil, stride, causal = (7, 5), (3, 3), (2, 1), (1, 2), (False, False)
    tensors = [
        *qkv(S, Hq=4, Hkv=2, seed=21),
        rand(4, 5, 5, seed=22),
        rand(2, 2, 2, 4, seed=23),
        rand(2, 2, 2, 3, seed=24),
    ]
    go, gl = rand(2, *S, 4, 3, seed=25), rand(2, *S, 4, seed=26)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in tensors]
        out, lse = fn(*leaves)
        return torch.autograd.grad((out * go).sum() + (lse * gl).sum(), leaves)

    ref = grads(
        lambda q, k, v, rpb, ak, av: na_reference(
            q, k, v, kernel, dil, stride, causal, rpb=rpb, additional_keys=ak, additional_values=av, return_lse=True
        )
    )
    loop = grads(
        lambda q, k, v, rpb, ak, av: loop_na(q, k, v, kernel, dil, stride, causal, rpb=rpb, add_k=ak, add_v=av)
    )
    for name, a, b in zip(["dq", "dk", "dv", "drpb", "dadd_k", "dadd_v"], ref, loop):
        assert_close(a, b, name=name, **TOL)


def test_gradcheck_causal_strided():
    q, k, v = (t.requires_grad_() for t in qkv((6,), Hq=2, Hkv=1, D=2, Dv=2, B=1, seed=31))

    def fn(q, k, v):
        return na_reference(q, k, v, 3, 1, 2, True, return_lse=True)

    assert torch.autograd.gradcheck(fn, (q, k, v))


# --------------------------------------------------------------------------------------------------
# Unfused reference vs loop, and unfused composition == fused.
# --------------------------------------------------------------------------------------------------


def heads_first(x):
    return x.movedim(-2, 1)


@pytest.mark.parametrize("case", list(CASES) + list(RPB_CASES), ids=list(CASES) + list(RPB_CASES))
def test_unfused_matches_loop(case):
    S, kernel, dil, stride, causal = {**CASES, **RPB_CASES}[case]
    q, k, v = (heads_first(t) for t in qkv(S, seed=41))
    rpb = rand(2, *(2 * kk - 1 for kk in kernel), seed=42) if case in RPB_CASES else None
    add_k, add_v = rand(2, 2, 3, 4, seed=43), rand(2, 2, 3, 3, seed=44)
    K = math.prod(kernel)

    attn = na_qk_reference(q, k, kernel, dil, stride, causal, rpb=rpb, additional_keys=add_k)
    assert attn.shape == (2, 2, *S, K + 3)
    assert_close(attn, loop_qk(q, k, kernel, dil, stride, causal, rpb=rpb, add_k=add_k), name="qk", **TOL)

    # Garbage (including NaN and inf) in invalid slots must not leak into the output.
    w = rand(*attn.shape, seed=45)
    invalid = attn.isinf()
    w = torch.where(invalid, torch.full_like(w, float("nan")), w)
    if invalid.any():
        w[invalid.nonzero()[0].unbind()] = float("inf")
    out = na_av_reference(w, v, kernel, dil, stride, causal, additional_values=add_v)
    assert out.shape == (2, 2, *S, 3)
    assert_close(out, loop_av(w, v, kernel, dil, stride, causal, add_v=add_v), name="av", **TOL)


@pytest.mark.parametrize(
    "case", ["1d-k4-s2-causal", "2d-k4x3-s(2,3)-causal(F,T)", "3d-k2x3x3-d(1,1,2)-s(1,2,3)-causal(T,F,F)"]
)
def test_unfused_composition_equals_fused(case):
    S, kernel, dil, stride, causal = CASES[case]
    q, k, v = qkv(S, D=4, seed=51)
    add_k, add_v = rand(2, 2, 2, 4, seed=52), rand(2, 2, 2, 3, seed=53)
    scale = 4**-0.5
    attn = na_qk_reference(
        heads_first(q) * scale, heads_first(k), kernel, dil, stride, causal, additional_keys=heads_first(add_k)
    )
    out = na_av_reference(
        attn.softmax(-1), heads_first(v), kernel, dil, stride, causal, additional_values=heads_first(add_v)
    )
    fused = na_reference(q, k, v, kernel, dil, stride, causal, additional_keys=add_k, additional_values=add_v)
    assert_close(out.movedim(1, -2), fused, name="qk-softmax-av vs fused", **TOL)


def test_unfused_gqa_and_gradients():
    """GQA in the unfused ops, and gradients of qk/av flow (invalid slots get zero gradient)."""
    S, kernel = (9,), (4,)
    q = rand(2, 4, *S, 3, seed=61).requires_grad_()
    k = rand(2, 2, *S, 3, seed=62).requires_grad_()
    v = rand(2, 2, *S, 5, seed=63).requires_grad_()
    attn = na_qk_reference(q, k, kernel, 2, 1, True)
    k_full = k.repeat_interleave(2, dim=1)
    assert_close(attn, loop_qk(q, k_full, kernel, (2,), (1,), (True,)), name="qk-gqa", **TOL)
    w = attn.softmax(-1)
    out = na_av_reference(w, v, kernel, 2, 1, True)
    assert_close(out, loop_av(w, v.repeat_interleave(2, dim=1), kernel, (2,), (1,), (True,)), name="av-gqa", **TOL)
    out.sum().backward()
    assert all(t.grad is not None and t.grad.isfinite().all() for t in (q, k, v))

    w2 = rand(2, 4, *S, 4, seed=64).requires_grad_()
    na_av_reference(w2, v.detach(), kernel, 2, 1, True).sum().backward()
    assert (w2.grad[attn.isinf()] == 0).all()


# --------------------------------------------------------------------------------------------------
# Known facts.
# --------------------------------------------------------------------------------------------------


def dense_attention(q, k, v, mask=None, scale=None):
    """Plain softmax attention over flattened tokens, heads-last [B, *S, H, D]."""
    B, *S, H, _ = q.shape
    qf, kf, vf = (t.reshape(B, -1, H, t.shape[-1]).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(B, *S, H, v.shape[-1])


@pytest.mark.parametrize("S", [(7,), (4, 5), (2, 3, 4)])
def test_kernel_equal_to_length_is_full_attention(S):
    q, k, v = qkv(S, seed=71)
    assert_close(na_reference(q, k, v, S), dense_attention(q, k, v), name="full", **TOL)


def test_causal_kernel_equal_to_length_is_causal_attention():
    q, k, v = qkv((8,), seed=72)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    assert_close(na_reference(q, k, v, 8, is_causal=True), dense_attention(q, k, v, mask), name="causal", **TOL)


@pytest.mark.parametrize("S,kernel", [((12,), (4,)), ((6, 9), (3, 3)), ((4, 4, 6), (2, 4, 3))])
def test_stride_equal_kernel_is_block_attention(S, kernel):
    q, k, v = qkv(S, seed=73)
    coords = torch.stack(torch.meshgrid(*(torch.arange(L) for L in S), indexing="ij"), -1).reshape(-1, len(S))
    block = coords // torch.tensor(kernel)
    mask = (block[:, None, :] == block[None, :, :]).all(-1)
    assert_close(na_reference(q, k, v, kernel, stride=kernel), dense_attention(q, k, v, mask), name="blocked", **TOL)


def attended_counts(S, kernel, dil, stride, causal):
    """Keys attended by each query, measured through the reference: with q = 0 every logit is 0,
    so lse = log(number of attended keys)."""
    q = torch.zeros(1, *S, 1, 2, dtype=F64)
    k = torch.randn(1, *S, 1, 2, dtype=F64)
    _, lse = na_reference(q, k, k, kernel, dil, stride, causal, return_lse=True)
    return lse.exp().round().long().reshape(S)


@pytest.mark.parametrize("case", [c for c in CASES if "causal" not in c] + list(RPB_CASES))
def test_noncausal_query_attends_exactly_prod_kernel_keys(case):
    S, kernel, dil, stride, causal = {**CASES, **RPB_CASES}[case]
    assert (attended_counts(S, kernel, dil, stride, causal) == math.prod(kernel)).all()


@pytest.mark.parametrize("case", [c for c in CASES if "causal" in c])
def test_causal_counts(case):
    S, kernel, dil, stride, causal = CASES[case]
    counts = attended_counts(S, kernel, dil, stride, causal)
    for idx in itertools.product(*map(range, S)):
        expect = 1
        for i, L, kk, d, s, c in zip(idx, S, kernel, dil, stride, causal):
            p, n = i // d, math.ceil((L - i % d) / d)
            if not c:
                expect *= kk
            elif s == 1:
                expect *= min(p + 1, kk)  # plain causal NA: the k most recent keys
            else:
                leader = min((p // s) * s + s - 1, n - 1)
                expect *= p - max(leader - kk + 1, 0) + 1
        assert int(counts[idx]) == expect, idx


def test_default_scale_and_scale_argument():
    q, k, v = qkv((9,), D=4, seed=81)
    assert_close(na_reference(q, k, v, 3), na_reference(q, k, v, 3, scale=0.5), name="default scale", **TOL)
    assert_close(na_reference(q, k, v, 3, scale=1.0), na_reference(q * 2, k, v, 3), name="scale=1", **TOL)


def test_validation_errors():
    q, k, v = qkv((9,), Hq=3, Hkv=2)
    with pytest.raises(ValueError, match="heads"):
        na_reference(q, k, v, 3)
    q, k, v = qkv((9,))
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        na_reference(q, k, v, 5, dilation=2)
    with pytest.raises(ValueError, match="stride"):
        na_reference(q, k, v, 3, stride=4)
    with pytest.raises(ValueError, match="kernel_size"):
        na_reference(q, k, v, (3, 3))
    with pytest.raises(ValueError, match="rpb"):
        na_reference(q, k, v, 3, rpb=torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="together"):
        na_reference(q, k, v, 3, additional_keys=torch.zeros(2, 1, 2, 4, dtype=F64))
    with pytest.raises(ValueError, match="attn"):
        na_av_reference(torch.zeros(2, 2, 9, 4, dtype=F64), heads_first(v), 3)


# --------------------------------------------------------------------------------------------------
# Non-finite inputs reach exactly what depends on them (the loop version has that by construction).
# --------------------------------------------------------------------------------------------------

POISON = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
NONFINITE_CASES = ["1d-k3", "1d-k3-d3-s2-causal", "2d-k3x3-causal(T,F)", "3d-k3x2x2-s(3,2,1)"]


def _poison(t: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    """A copy of ``t`` with one element (chosen by ``seed``) set to ``value``."""
    g = torch.Generator().manual_seed(seed)
    t = t.clone(memory_format=torch.contiguous_format)
    t.view(-1)[int(torch.randint(t.numel(), (1,), generator=g))] = value
    return t


def _nonfinite_grads(fn, tensors, seed):
    leaves = [t.clone().requires_grad_() for t in tensors]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    ups = [rand(*o.shape, seed=seed + i) for i, o in enumerate(outs)]
    grads = torch.autograd.grad(outs, leaves, ups)
    return [o.detach() for o in outs], grads


def _compare_nonfinite(names, ref, loop, tensors, seed):
    """``ref`` and ``loop`` on the same poisoned inputs: outputs, then gradients, agree (non-finite
    pattern included) under ``names``; returns the reference's outputs."""
    outs, grads = _nonfinite_grads(ref, tensors, seed)
    outs_l, grads_l = _nonfinite_grads(loop, tensors, seed)
    for name, a, b in zip(names, [*outs, *grads], [*outs_l, *grads_l]):
        assert_close(a, b, name=name, **TOL)
    return outs


@pytest.mark.parametrize("value", list(POISON))
@pytest.mark.parametrize("target", range(5), ids=["q", "k", "v", "add_k", "add_v"])
@pytest.mark.parametrize("case", NONFINITE_CASES)
def test_fused_nonfinite_pattern_matches_loop(case, target, value):
    S, kernel, dil, stride, causal = CASES[case]
    tensors = [*qkv(S, Hq=2, Hkv=1, seed=71), rand(2, 2, 1, 4, seed=72), rand(2, 2, 1, 3, seed=73)]
    tensors[target] = _poison(tensors[target], POISON[value], seed=74)

    def ref(q, k, v, ak, av):
        return na_reference(
            q, k, v, kernel, dil, stride, causal, additional_keys=ak, additional_values=av, return_lse=True
        )

    def loop(q, k, v, ak, av):
        return loop_na(q, k, v, kernel, dil, stride, causal, add_k=ak, add_v=av)

    out, _ = _compare_nonfinite(["out", "lse", "dq", "dk", "dv", "dadd_k", "dadd_v"], ref, loop, tensors, 75)
    assert not out.isfinite().all(), "the poisoned element reaches no output"
    assert not out.isfinite().all(-1).all(), "a poisoned output row"
    assert out.isfinite().any(), "the poisoned element reaches every output"


@pytest.mark.parametrize("value", list(POISON))
@pytest.mark.parametrize("target", range(3), ids=["q", "k", "rpb"])
@pytest.mark.parametrize("case", ["1d-k5-d2-s2-rpb", "2d-k3x5-d(2,1)-rpb"])
def test_qk_nonfinite_pattern_matches_loop(case, target, value):
    S, kernel, dil, stride, causal = RPB_CASES[case]
    q, k, _ = (heads_first(t) for t in qkv(S, seed=81))
    tensors = [q, k, rand(2, *(2 * kk - 1 for kk in kernel), seed=82)]
    tensors[target] = _poison(tensors[target], POISON[value], seed=83)
    (attn,) = _compare_nonfinite(
        ["attn", "dq", "dk", "drpb"],
        lambda q, k, r: na_qk_reference(q, k, kernel, dil, stride, causal, rpb=r),
        lambda q, k, r: loop_qk(q, k, kernel, dil, stride, causal, rpb=r),
        tensors,
        84,
    )
    assert out_has_finite_and_not(attn)


@pytest.mark.parametrize("value", list(POISON))
@pytest.mark.parametrize("target", range(3), ids=["attn", "v", "add_v"])
@pytest.mark.parametrize("case", ["1d-k3-causal", "2d-k4x3-s(2,3)-causal(F,T)"])
def test_av_nonfinite_pattern_matches_loop(case, target, value):
    S, kernel, dil, stride, causal = CASES[case]
    v = heads_first(qkv(S, seed=91)[2])
    tensors = [rand(2, 2, *S, math.prod(kernel) + 2, seed=92), v, rand(2, 2, 2, 3, seed=93)]
    tensors[target] = _poison(tensors[target], POISON[value], seed=94)
    _compare_nonfinite(
        ["out", "dattn", "dv", "dadd_v"],
        lambda a, v, av: na_av_reference(a, v, kernel, dil, stride, causal, additional_values=av),
        lambda a, v, av: loop_av(a, v, kernel, dil, stride, causal, add_v=av),
        tensors,
        95,
    )


def out_has_finite_and_not(t: torch.Tensor) -> bool:
    return bool(t.isfinite().any()) and not bool(t.isfinite().all())
