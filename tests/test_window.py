"""One window rule (natten_kernels.window): equal to the reference oracle's, and the kernels' own copies
(C++ neighborhood.h through the CPU qk op; Triton fused_geometry._window under the interpreter) equal
to it, exhaustively on small axes: every length 2-11, kernel, dilation, stride and causal flag."""

from __future__ import annotations

import json

import pytest
import torch
from natten_kernels.window import axis_pairs, group_lengths, window
from natten_legacy.reference import neighborhood_slots

from interpret import run_interpreted


def _axes():
    for L in range(2, 12):
        for k in range(2, L + 1):
            for d in range(1, L // k + 1):
                for s in range(1, k + 1):
                    for causal in (False, True):
                        yield L, k, d, s, causal


AXES = list(_axes())


def _keys(L, k, d, s, causal) -> list[list[int]]:
    """Global keys of every query by natten_kernels.window."""
    out = []
    for i in range(L):
        g, p = i % d, i // d
        start, end = window(p, group_lengths(L, d)[g], k, s, causal)
        out.append([g + q * d for q in range(start, end)])
    return out


def test_window_equals_the_reference():
    for L, k, d, s, causal in AXES:
        keys, valid = neighborhood_slots(L, k, d, s, causal)
        expected = [[int(x) for x, ok in zip(row, vrow) if ok] for row, vrow in zip(keys, valid)]
        assert _keys(L, k, d, s, causal) == expected, (L, k, d, s, causal)
        assert axis_pairs(L, k, d, s, causal) == int(valid.sum()), (L, k, d, s, causal)


def test_cpu_kernels_copy_equals_it():
    """neighborhood.h through natten's CPU qk op: with q = 1 and key j holding the value j, slot t of
    query i holds its key index (-inf where causal masking removes it)."""
    from natten.functional import na1d_qk

    for L, k, d, s, causal in AXES:
        keys = torch.arange(L, dtype=torch.float64).reshape(1, 1, L, 1)
        slots = na1d_qk(torch.ones_like(keys), keys, k, d, is_causal=causal, stride=s).reshape(L, k)
        got = [[int(x) for x in row if torch.isfinite(x)] for row in slots]
        assert got == _keys(L, k, d, s, causal), (L, k, d, s, causal)


try:  # the kernel that evaluates the Triton copy (run by run_all, in an interpreter process)
    import triton
    import triton.language as tl
    from natten_kernels.triton.fused_geometry import _window

    @triton.jit
    def _windows(out_s, out_e, n, K, S, C: tl.constexpr, BLOCK: tl.constexpr):
        p = tl.arange(0, BLOCK)
        start, end = _window(p, n, K, S, C)
        tl.store(out_s + p, start, mask=p < n)
        tl.store(out_e + p, end, mask=p < n)

except ImportError:  # no triton: test_triton_copy_equals_it says so
    _windows = None


def run_all() -> dict:
    """Under TRITON_INTERPRET=1 (tests/interpret.py): fused_geometry._window for every query of every
    small axis against natten_kernels.window; ``{"checked": n, "mismatches": [...]}``."""
    bad = []
    seen = set()
    for L, k, d, s, causal in AXES:
        for n in set(group_lengths(L, d)):
            if n < k or (n, k, s, causal) in seen:
                continue
            seen.add((n, k, s, causal))
            st, en = torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.int32)
            _windows[(1,)](st, en, n, k, s, C=causal, BLOCK=16)
            want = [window(p, n, k, s, causal) for p in range(n)]
            if list(zip(st.tolist(), en.tolist())) != want:
                bad.append([n, k, s, causal])
    return {"checked": len(seen), "mismatches": bad}


def test_triton_copy_equals_it():
    pytest.importorskip("triton")
    result = run_interpreted("test_window", timeout=600)
    assert result["checked"] > 100 and result["mismatches"] == [], json.dumps(result)[:500]
