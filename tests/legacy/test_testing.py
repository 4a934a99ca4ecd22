"""The comparison helper catches what it must and says where."""

from __future__ import annotations

import pytest
import torch
from natten_legacy.testing import Report, assert_close, assert_close_to_reference, compare, default_tolerances

INF, NAN = float("inf"), float("nan")


def base():
    return torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 7


def test_equal_tensors_pass_including_matching_nan_and_inf():
    e = base()
    e[0, 0, 0], e[1, 2, 3], e[0, 1, 1] = NAN, -INF, INF
    rep = assert_close(e.clone(), e, atol=0, rtol=0)
    assert rep.ok and rep.max_abs_err == 0 and rep.nan_mismatches == rep.inf_mismatches == 0


def test_wrong_value_is_caught_with_worst_and_first_bad_index():
    e = base()
    a = e.clone()
    a[0, 2, 1] += 1e-3  # first bad in row-major order
    a[1, 1, 2] += 5e-3  # worst
    with pytest.raises(AssertionError) as info:
        assert_close(a, e, atol=1e-4, rtol=0, name="out")
    text = str(info.value)
    assert "out: MISMATCH" in text and "(1, 1, 2)" in text and "(0, 2, 1)" in text
    rep = compare(a, e, atol=1e-4, rtol=0)
    assert rep.num_bad == 2 and rep.first_bad == [(0, 2, 1), (1, 1, 2)]
    assert rep.worst_index == (1, 1, 2) and rep.max_abs_err == pytest.approx(5e-3)
    assert rep.max_rel_err == pytest.approx(5e-3 / float(e[1, 1, 2]))
    assert assert_close(a, e, atol=1e-2, rtol=0).ok  # within a looser tolerance


def test_rtol_scales_with_expected():
    e = torch.tensor([1.0, 1000.0], dtype=torch.float64)
    a = e + torch.tensor([0.0, 0.5], dtype=torch.float64)
    assert assert_close(a, e, atol=0, rtol=1e-3).ok
    with pytest.raises(AssertionError):
        assert_close(a, e, atol=0, rtol=1e-4)


@pytest.mark.parametrize("where", ["actual", "expected"])
def test_nan_mismatch_is_caught(where):
    e = base()
    a = e.clone()
    (a if where == "actual" else e)[1, 0, 3] = NAN
    rep = compare(a, e, atol=1.0, rtol=1.0)
    assert not rep.ok and rep.nan_mismatches == 1 and rep.first_nan_mismatches == [(1, 0, 3)]
    assert rep.first_bad == [(1, 0, 3)] and rep.num_bad == 0  # a pattern error, not a value error
    assert rep.max_rel_err < 1e-12  # errors are measured where both sides are finite
    with pytest.raises(AssertionError, match=r"NaN mismatches: 1, first at \[\(1, 0, 3\)\]"):
        assert_close(a, e, atol=1.0, rtol=1.0)


@pytest.mark.parametrize("actual_value,expected_value", [(INF, 1.0), (1.0, -INF), (INF, -INF), (-INF, INF)])
def test_inf_mismatch_is_caught(actual_value, expected_value):
    e = base()
    a = e.clone()
    a[0, 1, 2], e[0, 1, 2] = actual_value, expected_value
    rep = compare(a, e, atol=1e9, rtol=1e9)
    assert not rep.ok and rep.inf_mismatches == 1 and rep.first_inf_mismatches == [(0, 1, 2)]
    with pytest.raises(AssertionError, match="inf mismatches: 1"):
        assert_close(a, e, atol=1e9, rtol=1e9)


def test_nan_against_inf_counts_once():
    rep = compare(torch.tensor([NAN]), torch.tensor([INF]))
    assert rep.nan_mismatches == 1 and rep.inf_mismatches == 0 and not rep.ok


def test_shape_mismatch_is_caught():
    rep = compare(torch.zeros(2, 3), torch.zeros(3, 2))
    assert rep.shape_mismatch and not rep.ok
    with pytest.raises(AssertionError, match=r"shape mismatch"):
        assert_close(torch.zeros(2, 3), torch.zeros(3, 2), atol=1, rtol=1)
    with pytest.raises(AssertionError, match=r"\[2, 3\].*\[6\]"):
        assert_close(torch.zeros(2, 3), torch.zeros(6), atol=1, rtol=1)


def test_report_str_is_readable():
    rep = compare(
        torch.tensor([1.0, 2.5], dtype=torch.float16), torch.tensor([1.0, 2.0], dtype=torch.float64), atol=0.1
    )
    assert isinstance(rep, Report)
    text = str(rep)
    assert "torch.float16" in text and "torch.float64" in text and "max abs err 5.000e-01" in text
    assert "worst at (1,)" in text and "elements beyond tolerance: 1" in text


def test_mixed_dtypes_and_scalars():
    assert assert_close(
        torch.tensor(1.0, dtype=torch.bfloat16), torch.tensor(1.0, dtype=torch.float64), atol=0, rtol=0
    ).ok
    rep = compare(torch.tensor(2.0), torch.tensor(1.0), atol=0.5)
    assert rep.worst_index == () and rep.first_bad == [()]
    assert compare(torch.zeros(0, 3), torch.zeros(0, 3), atol=0).ok


def test_default_tolerances_are_ordered_by_precision():
    tols = [default_tolerances(d) for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)]
    assert [t[0] for t in tols] == sorted(t[0] for t in tols)
    assert default_tolerances(torch.int64) == (0.0, 0.0)


def test_reference_rule_with_eager():
    """Allowed error = max(3 * eager error, dtype floor), rtol 0."""
    ref = torch.linspace(-1, 1, 50, dtype=torch.float64)
    eager = ref + 0.01  # eager float32 "error" 1e-2 -> allowed 3e-2
    ok = (ref + 0.025).float()
    rep = assert_close_to_reference(ok, ref, eager=eager.float(), name="x")
    assert rep.atol == pytest.approx(0.03, rel=1e-5) and rep.rtol == 0 and "eager" in rep.rule
    with pytest.raises(AssertionError, match="3 x eager err"):
        assert_close_to_reference((ref + 0.035).float(), ref, eager=eager.float())
    # A perfect eager result does not demand perfection: the dtype floor applies.
    floor = default_tolerances(torch.float32)[0]
    assert assert_close_to_reference((ref + floor / 2).float(), ref, eager=ref.float()).atol == floor


def test_reference_rule_without_eager_uses_dtype_table():
    ref = torch.linspace(-1, 1, 50, dtype=torch.float64)
    assert_close_to_reference((ref + 1e-3).half(), ref)  # within fp16 tolerance
    with pytest.raises(AssertionError, match=r"default tolerances for torch\.float32"):
        assert_close_to_reference((ref + 1e-3).float(), ref)
    with pytest.raises(AssertionError, match="NaN"):
        bad = ref.clone()
        bad[7] = NAN
        assert_close_to_reference(bad.bfloat16(), ref)
