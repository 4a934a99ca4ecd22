"""NaN and inf stay inside their dependency sets on the CPU ops.

One element of one input is set to NaN, +inf or -inf; every output and every gradient must then have
exactly the NaN/inf pattern of the reference (``natten_legacy.reference``, which combines a query
with its own slots only, so that a non-finite value reaches exactly what depends on it), and equal
values elsewhere. Kernels that multiply the keys outside a query's window by a zero weight fail this
(``0 * NaN = NaN``): a NaN in ``v[:, 10]`` of a 16-token problem with kernel 3 must poison outputs
9-11, not all 16.
"""

from __future__ import annotations

import math

import pytest
import torch
from natten_legacy.reference import na_av_reference, na_qk_reference, na_reference
from natten_legacy.testing import compare

import natten.functional as F
from cases import Case
from helpers import fused_inputs

POISON = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
CASES = [
    Case((16,), (3,), (1,), (1,), (False,), rpb=True, additional=2),  # the reported problem, plus rpb / extra KV
    Case((17,), (4,), (2,), (1,), (True,), heads=2, kv_heads=1),
    Case((7, 8), (3, 3), (1, 2), (1, 1), (True, False), heads=2, kv_heads=1, additional=2),
    Case((6, 7), (3, 5), (2, 1), (2, 1), (False, False), rpb=True),
    Case((4, 5, 6), (2, 3, 3), (1, 1, 2), (1, 2, 1), (False, True, False), additional=2),
    Case((3, 4, 5), (3, 3, 3), (1, 1, 1), (1, 3, 2), (False, False, False), rpb=True),
]
FUSED = {1: F.na1d, 2: F.na2d, 3: F.na3d}
QK = {1: F.na1d_qk, 2: F.na2d_qk, 3: F.na3d_qk}
AV = {1: F.na1d_av, 2: F.na2d_av, 3: F.na3d_av}
TOL = dict(atol=1e-10, rtol=1e-8)


def _poison(t: torch.Tensor, value: float, seed: int = 0) -> torch.Tensor:
    """A leaf copy of ``t`` with one element (drawn with ``seed``) set to ``value``."""
    g = torch.Generator().manual_seed(seed)
    t = t.detach().clone(memory_format=torch.contiguous_format)
    t.view(-1)[int(torch.randint(t.numel(), (1,), generator=g))] = value
    return t.requires_grad_()


def _matrix(targets_of):
    params = []
    for case in CASES:
        for target in targets_of(case):
            for value in POISON:
                params.append(pytest.param(case, target, value, id=f"{case.id}-{target}-{value}"))
    return params


def _run(fn, inputs: dict, seed: int):
    """Outputs of fn(**inputs) and the gradients of every input for random upstream gradients."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    outs = fn(**leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, list(leaves.values()), ups, allow_unused=True)
    return [o.detach() for o in outs], dict(zip(leaves, grads))


def _assert_same(actual, expected, out_names):
    (outs, grads), (ref_outs, ref_grads) = actual, expected
    reports = [compare(a, e, name=n, **TOL) for n, a, e in zip(out_names, outs, ref_outs)]
    reports += [compare(grads[n], ref_grads[n], name=f"d{n}", **TOL) for n in ref_grads]
    bad = [str(r) for r in reports if not r.ok]
    assert not bad, "\n".join(bad)


def _fused_targets(case):
    return (
        ["q", "k", "v"]
        + (["rpb"] if case.rpb else [])
        + (["additional_keys", "additional_values"] if case.additional else [])
    )


@pytest.mark.parametrize("case,target,value", _matrix(_fused_targets))
def test_fused_forward_backward(case, target, value):
    inputs = fused_inputs(case)
    inputs[target] = _poison(inputs[target], POISON[value])
    params = (case.kernel_size, case.dilation, case.is_causal)

    def run(q, k, v, **opt):
        return FUSED[case.rank](q, k, v, *params, stride=case.stride, return_lse=True, **opt)

    def ref(q, k, v, **opt):
        return na_reference(
            q, k, v, case.kernel_size, case.dilation, case.stride, case.is_causal, **opt, return_lse=True
        )

    actual, expected = _run(run, inputs, seed=1), _run(ref, inputs, seed=1)
    assert not all(o.isfinite().all() for o in expected[0]) or (target == "rpb" and value == "-inf")
    _assert_same(actual, expected, ["out", "lse"])


def _heads_first(case, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, s, d = case.batch, case.heads, case.spatial, case.head_dim
    t = {n: torch.randn(b, h, *s, d, generator=g, dtype=torch.float64) for n in ("query", "key", "value")}
    if case.rpb:
        t["rpb"] = torch.randn(h, *(2 * k - 1 for k in case.kernel_size), generator=g, dtype=torch.float64)
    if case.additional:
        t["additional_keys"] = torch.randn(b, h, case.additional, d, generator=g, dtype=torch.float64)
        t["additional_values"] = torch.randn(b, h, case.additional, d, generator=g, dtype=torch.float64)
    return t


def _qk_targets(case):
    return ["query", "key"] + (["rpb"] if case.rpb else []) + (["additional_keys"] if case.additional else [])


@pytest.mark.parametrize("case,target,value", _matrix(_qk_targets))
def test_unfused_qk_forward_backward(case, target, value):
    t = _heads_first(case)
    inputs = {n: t[n] for n in _qk_targets(case)}
    inputs[target] = _poison(inputs[target], POISON[value])
    args = (case.kernel_size, case.dilation)

    def run(query, key, rpb=None, additional_keys=None):
        return QK[case.rank](query, key, *args, additional_keys, case.is_causal, rpb, stride=case.stride)

    def ref(query, key, rpb=None, additional_keys=None):
        return na_qk_reference(query, key, *args, case.stride, case.is_causal, rpb=rpb, additional_keys=additional_keys)

    _assert_same(_run(run, inputs, seed=2), _run(ref, inputs, seed=2), ["attn"])


def _av_targets(case):
    return ["attn", "value"] + (["additional_values"] if case.additional else [])


@pytest.mark.parametrize("case,target,value", _matrix(_av_targets))
def test_unfused_av_forward_backward(case, target, value):
    t = _heads_first(case)
    g = torch.Generator().manual_seed(3)
    slots = math.prod(case.kernel_size) + case.additional
    attn = torch.randn(case.batch, case.heads, *case.spatial, slots, generator=g, dtype=torch.float64)
    inputs = {"attn": attn, "value": t["value"]}
    if case.additional:
        inputs["additional_values"] = t["additional_values"]
    inputs[target] = _poison(inputs[target], POISON[value], seed=4)
    args = (case.kernel_size, case.dilation)

    def run(attn, value, additional_values=None):
        return AV[case.rank](attn, value, *args, additional_values, case.is_causal, stride=case.stride)

    def ref(attn, value, additional_values=None):
        return na_av_reference(attn, value, *args, case.stride, case.is_causal, additional_values=additional_values)

    _assert_same(_run(run, inputs, seed=5), _run(ref, inputs, seed=5), ["out"])


@pytest.mark.parametrize("case,target,value", _matrix(lambda case: ["query", "key", "value"]))
def test_unfused_composition_forward_backward(case, target, value):
    """qk -> softmax -> av (the unfused path of the Modules) against the fused reference."""
    t = _heads_first(case)
    inputs = {n: t[n] for n in ("query", "key", "value")}
    inputs[target] = _poison(inputs[target], POISON[value])
    args = (case.kernel_size, case.dilation)
    scale = case.head_dim**-0.5

    def run(query, key, value):
        attn = QK[case.rank](query * scale, key, *args, None, case.is_causal, stride=case.stride).softmax(-1)
        return AV[case.rank](attn, value, *args, None, case.is_causal, stride=case.stride)

    def ref(query, key, value):
        q, k, v = (x.movedim(1, -2) for x in (query, key, value))  # heads-last
        return na_reference(q, k, v, *args, case.stride, case.is_causal, scale=scale).movedim(-2, 1)

    _assert_same(_run(run, inputs, seed=6), _run(ref, inputs, seed=6), ["out"])


def test_reported_problem_poisons_only_the_window():
    """The user report: NaN in v[:, 10], 16 tokens, kernel 3 -> outputs 9-11 only (fused and unfused)."""
    q, k, v = (torch.randn(1, 16, 1, 8) for _ in range(3))
    v[:, 10] = float("nan")
    bad = F.na1d(q, k, v, 3).isnan().flatten(2).any(-1)[0]
    assert bad.nonzero().flatten().tolist() == [9, 10, 11]
    hf = [x.transpose(1, 2) for x in (q, k, v)]
    out = F.na1d_av(F.na1d_qk(hf[0], hf[1], 3).softmax(-1), hf[2], 3)
    assert out[0, 0].isnan().any(-1).nonzero().flatten().tolist() == [9, 10, 11]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_low_precision_patterns(dtype):
    """The half/float32 path (float32 accumulation) confines non-finite values the same way."""
    case = CASES[2]
    inputs = {n: x.detach().to(dtype) for n, x in fused_inputs(case).items() if n in ("q", "k", "v")}
    inputs["v"] = _poison(inputs["v"], float("inf"))
    inputs["k"] = _poison(inputs["k"], float("nan"), seed=7)
    params = dict(kernel_size=(3, 3), dilation=(1, 2), is_causal=(True, False))

    def run(q, k, v):
        return FUSED[2](q, k, v, **params)

    def ref(q, k, v):
        return na_reference(q.double(), k.double(), v.double(), **params)

    out, grads = _run(run, inputs, 8)
    ref = _run(ref, inputs, 8)
    for a, e in zip([*out, *grads.values()], [*ref[0], *ref[1].values()]):
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf())
