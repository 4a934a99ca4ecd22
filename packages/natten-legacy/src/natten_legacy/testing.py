"""The one comparison helper every natten test and benchmark imports (docs/gpu.md, "Correctness at scale").

* :func:`compare` measures, never raises: max abs/rel error, worst element, NaN/inf pattern
  mismatches with the first offending indices, and (given tolerances) the out-of-tolerance elements.
* :func:`assert_close` raises ``AssertionError`` carrying that report.
* :func:`assert_close_to_reference` applies the §4 rule against a float64 reference.

Both tensors are upcast to float64 (on their device) before comparing. Non-finite values must match
exactly: NaN where the other side is NaN, ``+inf``/``-inf`` where the other side has the same
infinity (e.g. the ``-inf`` of invalid slots of the unfused attention tensor). Errors are measured
over the positions where both sides are finite.

Tolerances (``default_tolerances``; an element passes when ``|a - e| <= atol + rtol * |e|``):

=========  ======  ======  ==========================================================
dtype      atol    rtol    why
=========  ======  ======  ==========================================================
float64    1e-10   1e-8    eps 2.2e-16; reorderings of O(1e3) terms stay below 1e-12
float32    1e-4    1e-4    eps 1.2e-7; ~1e3 eps headroom for accumulation order
float16    2e-3    2e-3    eps 9.8e-4 (~2 eps): one output rounding plus fp32 accumulation
bfloat16   1.6e-2  1.6e-2  eps 7.8e-3 (~2 eps), same reasoning as float16
other      0       0       integers and bools compare exactly
=========  ======  ======  ==========================================================

With an ``eager`` result (the same computation in the tested dtype by plain torch), the allowed
absolute error is ``max(3 * max|eager - reference|, atol(dtype))`` with ``rtol = 0``: a backend may
be up to 3x less accurate than eager PyTorch, but is never held to better than the dtype floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Report", "assert_close", "assert_close_to_reference", "compare", "default_tolerances"]

_MAX_LISTED = 5  # how many offending indices a report lists

_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing a result computed in ``dtype`` with its float64 reference.

    The ``atol`` is also the absolute floor of the eager-relative rule. Unknown floating dtypes
    (e.g. float8) get the bfloat16 values scaled by their eps; non-floating dtypes compare exactly.
    """
    if dtype in _TOLERANCES:
        return _TOLERANCES[dtype]
    if dtype.is_floating_point:
        eps = torch.finfo(dtype).eps
        return (2 * eps, 2 * eps)
    return (0.0, 0.0)


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _indices(mask: Tensor) -> list[tuple[int, ...]]:
    """First few True positions of ``mask`` in row-major order, as index tuples."""
    return [_unravel(i, mask.shape) for i in mask.reshape(-1).nonzero()[:_MAX_LISTED, 0].tolist()]


@dataclass
class Report:
    """What :func:`compare` found. ``ok`` says whether the tensors agree within ``atol``/``rtol``."""

    name: str
    actual_shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    actual_dtype: torch.dtype
    expected_dtype: torch.dtype
    shape_mismatch: bool = False
    numel: int = 0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    worst_index: tuple[int, ...] | None = None  # where the abs error is largest (finite positions)
    worst_actual: float | None = None
    worst_expected: float | None = None
    nan_mismatches: int = 0  # NaN on exactly one side
    first_nan_mismatches: list[tuple[int, ...]] = field(default_factory=list)
    inf_mismatches: int = 0  # an infinity on one side that the other side lacks (or of the other sign)
    first_inf_mismatches: list[tuple[int, ...]] = field(default_factory=list)
    atol: float | None = None
    rtol: float | None = None
    rule: str = ""  # how atol/rtol were chosen, when a helper chose them
    num_bad: int = 0  # finite elements beyond tolerance (0 when no tolerance was given)
    first_bad: list[tuple[int, ...]] = field(default_factory=list)  # first failures of any kind, row-major

    @property
    def ok(self) -> bool:
        return not self.shape_mismatch and self.nan_mismatches == 0 and self.inf_mismatches == 0 and self.num_bad == 0

    def __str__(self) -> str:
        head = f"{self.name}: " if self.name else ""
        status = "OK" if self.ok else "MISMATCH"
        lines = [
            f"{head}{status}  actual {list(self.actual_shape)} {self.actual_dtype}"
            + f"  vs expected {list(self.expected_shape)} {self.expected_dtype}"
        ]
        if self.shape_mismatch:
            lines.append("  shape mismatch: values not compared")
            return "\n".join(lines)
        lines.append(
            f"  max abs err {self.max_abs_err:.3e}   max rel err {self.max_rel_err:.3e}   ({self.numel} elements)"
        )
        if self.worst_index is not None:
            lines.append(
                f"  worst at {self.worst_index}: actual {self.worst_actual!r} expected {self.worst_expected!r}"
            )
        if self.atol is not None:
            tol = f"  tolerance |a-e| <= {self.atol:.3e} + {self.rtol:.3e} * |e|"
            lines.append(tol + (f"   [{self.rule}]" if self.rule else ""))
            lines.append(f"  elements beyond tolerance: {self.num_bad}")
        if self.nan_mismatches:
            lines.append(f"  NaN mismatches: {self.nan_mismatches}, first at {self.first_nan_mismatches}")
        if self.inf_mismatches:
            lines.append(f"  inf mismatches: {self.inf_mismatches}, first at {self.first_inf_mismatches}")
        if self.first_bad:
            lines.append(f"  first bad indices: {self.first_bad}")
        return "\n".join(lines)


def compare(
    actual: Tensor,
    expected: Tensor,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    name: str = "",
) -> Report:
    """Compare two tensors elementwise (in float64) and report; never raises on a mismatch.

    Args:
        actual: the tensor under test, any shape/dtype/device.
        expected: the tensor it should equal, same shape (device may differ; moved to actual's).
        atol, rtol: optional; when given (``rtol`` defaults to 0), elements with
            ``|a - e| > atol + rtol * |e|`` are counted in ``num_bad``.
        name: label for the report.
    """
    rep = Report(name, tuple(actual.shape), tuple(expected.shape), actual.dtype, expected.dtype)
    if actual.shape != expected.shape:
        rep.shape_mismatch = True
        return rep
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(device=a.device, dtype=torch.float64)
    rep.numel = a.numel()
    if atol is not None:
        rep.atol, rep.rtol = float(atol), float(rtol or 0.0)
    if rep.numel == 0:
        return rep

    a_nan, e_nan = a.isnan(), e.isnan()
    nan_bad = a_nan != e_nan
    a_inf, e_inf = a.isinf(), e.isinf()
    # An infinity must meet the same infinity; NaN-vs-inf counts as a NaN mismatch already.
    inf_bad = (a_inf | e_inf) & ~(a_nan | e_nan) & (a != e)
    both_finite = a.isfinite() & e.isfinite()

    rep.nan_mismatches = int(nan_bad.sum())
    rep.first_nan_mismatches = _indices(nan_bad)
    rep.inf_mismatches = int(inf_bad.sum())
    rep.first_inf_mismatches = _indices(inf_bad)

    zero = torch.zeros((), dtype=torch.float64, device=a.device)
    err = torch.where(both_finite, (a - e).abs(), zero)
    e_abs = torch.where(both_finite, e.abs(), zero)
    rel = err / e_abs.clamp_min(torch.finfo(torch.float64).tiny)
    if bool(both_finite.any()):
        flat = int(err.reshape(-1).argmax())
        rep.max_abs_err = float(err.reshape(-1)[flat])
        rep.max_rel_err = float(rel.max())
        rep.worst_index = _unravel(flat, a.shape)
        rep.worst_actual = float(a.reshape(-1)[flat])
        rep.worst_expected = float(e.reshape(-1)[flat])

    bad = nan_bad | inf_bad
    if rep.atol is not None:
        over = err > rep.atol + rep.rtol * e_abs
        rep.num_bad = int(over.sum())
        bad = bad | over
    rep.first_bad = _indices(bad)
    return rep


def assert_close(actual: Tensor, expected: Tensor, *, atol: float, rtol: float, name: str = "") -> Report:
    """Raise ``AssertionError`` (with the :class:`Report`) unless ``actual`` matches ``expected``.

    Fails on a shape mismatch, any NaN/inf pattern mismatch, or any finite element with
    ``|a - e| > atol + rtol * |e|``. Returns the report when it passes.
    """
    rep = compare(actual, expected, atol=atol, rtol=rtol, name=name)
    if not rep.ok:
        raise AssertionError("\n" + str(rep))
    return rep


def assert_close_to_reference(
    actual: Tensor,
    reference: Tensor,
    *,
    eager: Tensor | None = None,
    name: str = "",
) -> Report:
    """docs/gpu.md, "Correctness at scale": compare a backend result with the float64 reference on upcast inputs.

    Args:
        actual: the backend's result, in the tested dtype.
        reference: the float64 result of the reference on the same inputs upcast to float64.
        eager: optional; the same computation by plain torch in ``actual``'s dtype. Then the allowed
            absolute error is ``max(3 * max|eager - reference|, atol(dtype))`` and ``rtol = 0``;
            without it, :func:`default_tolerances` of ``actual.dtype`` apply.
        name: label for the report.
    """
    floor, rtol = default_tolerances(actual.dtype)
    if eager is not None:
        eager_rep = compare(eager, reference, name="eager")
        if eager_rep.shape_mismatch:
            raise ValueError(f"eager must have the reference's shape {list(reference.shape)}, got {list(eager.shape)}")
        atol = max(3.0 * eager_rep.max_abs_err, floor)
        rule = f"max(3 x eager err {eager_rep.max_abs_err:.3e}, floor {floor:.1e} for {actual.dtype})"
        rtol = 0.0
    else:
        atol = floor
        rule = f"default tolerances for {actual.dtype}"
    rep = compare(actual, reference, atol=atol, rtol=rtol, name=name)
    rep.rule = rule
    if not rep.ok:
        raise AssertionError("\n" + str(rep))
    return rep
