"""Unfused na*d_qk / na*d_av against the reference: values, gradients, gradgradcheck, forward AD, nested."""

import pytest
import torch
from natten_legacy.reference import na_av_reference, na_qk_reference

from cases import unfused_cases
from unfused_checks import (
    check_forward_mode_ad,
    check_gradcheck_and_gradgradcheck,
    check_matches_reference,
    check_nested_tensor_forward,
    check_outputs_fully_written,
    inputs,
    pipeline,
    tiny,
)

CASES = unfused_cases("cpu")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(case):
    check_matches_reference(case)


GRAD_CASES = [c for c in CASES if c.dtype == torch.float64 and len(c.spatial) < 3][:6] + [
    c for c in CASES if len(c.spatial) == 3 and max(c.spatial) <= 8
][:1]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradcheck_and_gradgradcheck(case):
    check_gradcheck_and_gradgradcheck(case)


@pytest.mark.parametrize("case", GRAD_CASES[:4], ids=[c.id for c in GRAD_CASES[:4]])
def test_forward_mode_ad(case):
    check_forward_mode_ad(case)


def test_forward_mode_matches_jvp_of_reference():
    from torch.autograd import forward_ad

    case = tiny(CASES[2])
    t = inputs(case, requires_grad=False)
    tangents = {n: torch.randn_like(x) for n, x in t.items()}
    with forward_ad.dual_level():
        duals = {n: forward_ad.make_dual(x, tangents[n]) for n, x in t.items()}
        got = forward_ad.unpack_dual(pipeline(case, duals)[1]).tangent
    _, ref = torch.func.jvp(
        lambda *xs: pipeline(case, dict(zip(t, xs)), na_qk_reference, na_av_reference)[1],
        tuple(t.values()),
        tuple(tangents.values()),
    )
    torch.testing.assert_close(got, ref)


def test_nested_tensor_forward():
    check_nested_tensor_forward()


def test_outputs_fully_written(poisoned):
    check_outputs_fully_written(CASES[4])
