"""Exact neighborhood attention on sampled queries: the oracle for problems too large for the dense
reference (docs/gpu.md, "Correctness at scale": "sampled queries against the exact window, forward and backward").

Each sampled query's window comes from :func:`natten_legacy.reference.neighborhood_slots` (the one
place the §3 formulas live), never from a kernel's geometry code; its softmax runs in float64 over
the gathered window (plus the additional keys). For the backward, the output gradient is zero
except at the sampled queries, so the exact ``dq`` (nonzero at those queries only), ``dk``, ``dv``
(nonzero in their windows only), ``drpb`` and the additional keys' gradients follow from those
windows alone.

* :func:`sample_queries`: corners, edges, faces and interior of the grid (every combination of
  low border / interior / high border over the axes), plus random queries.
* :func:`sampled_reference`: float64 outputs, LSE and gradients of sampled queries.
* :func:`verify`: runs an implementation with those output gradients and checks every result.
* :func:`check_sampled`: a :class:`~natten_legacy.testing.Report` with the tolerance of §4 for large
  problems (:func:`tolerance`): ``3 x`` the error of rounding the exact result to the tested dtype,
  plus one eps of the dtype (at least 32 float32 eps) at the result's largest magnitude.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from natten_legacy.reference import _params, neighborhood_slots
from natten_legacy.testing import Report, compare

__all__ = ["check_sampled", "flat_index", "sample_queries", "sampled_reference", "summary", "tolerance", "verify"]

_GATHER_BYTES = 1 << 30  # float64 bytes of gathered windows per chunk of queries


def sample_queries(
    spatial: Sequence[int], kernel_size, dilation=1, *, per_case: int = 1, extra: int = 8, seed: int = 0
) -> Tensor:
    """``LongTensor [M, R]`` of query coordinates covering every border case.

    Per axis, a coordinate is drawn from the low border (the first ``kernel * dilation`` positions,
    where windows are shifted), the interior, or the high border; every combination over the axes
    (corners, edges, faces, interior: ``3 ** R`` cases) gets ``per_case`` draws, the extreme corners
    ``(0, ..)`` and ``(L - 1, ..)`` always among them, plus ``extra`` uniformly random queries.
    """
    rank = len(spatial)
    prm = _params(spatial, kernel_size, dilation, 1, False)
    gen = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return lo + int(torch.randint(max(hi - lo, 1), (1,), generator=gen)) if hi > lo else lo

    ranges = []
    for a, L in enumerate(spatial):
        reach = min(prm.kernel_size[a] * prm.dilation[a], L)
        mid_lo, mid_hi = (reach, L - reach) if L - reach > reach else (L // 2, L // 2 + 1)
        ranges.append([(0, reach), (mid_lo, mid_hi), (max(L - reach, 0), L)])
    rows = [tuple(0 for _ in spatial), tuple(L - 1 for L in spatial)]
    for combo in itertools.product(range(3), repeat=rank):
        for _ in range(per_case):
            rows.append(tuple(draw(*ranges[a][c]) for a, c in enumerate(combo)))
    for _ in range(extra):
        rows.append(tuple(draw(0, L) for L in spatial))
    return torch.tensor(sorted(set(rows)), dtype=torch.long)


def flat_index(spatial: Sequence[int], coords: Tensor) -> Tensor:
    """Row-major flat token index ``[M]`` of coordinates ``[M, R]``."""
    flat = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    for a, L in enumerate(spatial):
        flat = flat * L + coords[:, a]
    return flat


def _windows(spatial, prm, coords: Tensor, device) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Flat keys ``[M, K]``, valid ``[M, K]`` and per-axis relative rpb indices ``[M, K]`` of the
    sampled queries (slots row-major over the kernel axes, as in the unfused layout)."""
    flat = valid = None
    rel = []
    for a, L in enumerate(spatial):
        q = coords[:, a].to(device)
        keys, ok = neighborhood_slots(
            L, prm.kernel_size[a], prm.dilation[a], prm.stride[a], prm.is_causal[a], device=device, queries=q
        )
        r = (prm.kernel_size[a] - 1) + torch.div(keys - q[:, None], prm.dilation[a], rounding_mode="floor")
        if flat is None:
            flat, valid, rel = keys, ok, [r]
            continue
        m, k = keys.shape
        flat = (flat[:, :, None] * L + keys[:, None, :]).reshape(m, -1)
        valid = (valid[:, :, None] & ok[:, None, :]).reshape(m, -1)
        rel = [x.repeat_interleave(k, dim=1) for x in rel] + [r.repeat(1, flat.shape[1] // k)]
    return flat, valid, rel


def sampled_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    queries: Tensor,
    kernel_size,
    dilation=1,
    stride=1,
    is_causal=False,
    *,
    rpb: Tensor | None = None,
    scale: float | None = None,
    additional_keys: Tensor | None = None,
    additional_values: Tensor | None = None,
    grad_out: Tensor | None = None,
    grad_lse: Tensor | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Fused NA (heads-last, the layouts of :func:`~natten_legacy.reference.na_reference`) at sampled
    queries, in float64 on ``q``'s device.

    Args:
        q, k, v: ``[B, *S, Hq, D]``, ``[B, *S, Hkv, D]``, ``[B, *S, Hkv, Dv]`` (any float dtype).
        queries: ``LongTensor [M, R]`` query coordinates (:func:`sample_queries`).
        kernel_size, dilation, stride, is_causal, rpb, scale, additional_keys, additional_values: as
            for ``na_reference``.
        grad_out: ``[B, M, Hq, Dv]`` (optional), the output gradient at the sampled queries (zero at
            every other query); ``grad_lse``: ``[B, M, Hq]`` (optional), the same for the LSE.

    Returns:
        ``out [B, M, Hq, Dv]``, ``lse [B, M, Hq]`` (float64) and, with ``grad_out`` or ``grad_lse``,
        the exact gradients of every input by name (``q``, ``k``, ``v``, ``rpb``,
        ``additional_keys``, ``additional_values``), full-sized, float64.
    """
    B, *S, Hq, D = q.shape
    Hkv, Dv = k.shape[-2], v.shape[-1]
    if k.shape[:-2] != q.shape[:-2] or v.shape[:-1] != k.shape[:-1] or Hkv < 1 or Hq % Hkv:
        raise ValueError(f"q, k, v must be [B, *S, H, D] with kv heads dividing q heads; got {q.shape}, {k.shape}")
    prm = _params(S, kernel_size, dilation, stride, is_causal)
    scale = D**-0.5 if scale is None else float(scale)
    dev, N, G = q.device, math.prod(S), Hq // Hkv
    backward = grad_out is not None or grad_lse is not None
    leaves = {"q": q, "k": k, "v": v, "rpb": rpb, "additional_keys": additional_keys}
    leaves["additional_values"] = additional_values
    x = {n: t.detach().to(torch.float64).requires_grad_(backward) for n, t in leaves.items() if t is not None}
    qf, kf, vf = x["q"].reshape(B, N, Hkv, G, D), x["k"].reshape(B, N, Hkv, D), x["v"].reshape(B, N, Hkv, Dv)
    keys, valid, rel = _windows(S, prm, queries, dev)
    qidx = flat_index(S, queries.to(dev))
    K = keys.shape[1]
    chunk = max(1, _GATHER_BYTES // max(1, 8 * B * K * Hkv * (D + Dv) * 3))
    outs, lses = [], []
    for c0 in range(0, qidx.numel(), chunk):
        sl = slice(c0, c0 + chunk)
        qs, ks, vs = qf[:, qidx[sl]], kf[:, keys[sl]], vf[:, keys[sl]]  # [B, m, Hkv, G, D], [B, m, K, Hkv, *]
        logits = torch.einsum("bmhgd,bmkhd->bmhgk", qs, ks) * scale
        if "rpb" in x:
            bias = x["rpb"][(slice(None), *(r[sl] for r in rel))]  # [Hq, m, K]
            logits = logits + bias.reshape(Hkv, G, *bias.shape[1:]).permute(2, 0, 1, 3)[None]
        logits = logits.masked_fill(~valid[sl][None, :, None, None, :], float("-inf"))
        values = vs.permute(0, 1, 3, 2, 4)[:, :, :, None]  # [B, m, Hkv, 1, K, Dv]
        if "additional_keys" in x:
            add = torch.einsum("bmhgd,bnhd->bmhgn", qs, x["additional_keys"]) * scale
            logits = torch.cat([logits, add], dim=-1)
            av = x["additional_values"].permute(0, 2, 1, 3)[:, None, :, None]  # [B, 1, Hkv, 1, n, Dv]
            values = torch.cat([values.expand(-1, -1, -1, 1, -1, -1), av.expand(B, qs.shape[1], -1, 1, -1, -1)], -2)
        lse = torch.logsumexp(logits, dim=-1)  # [B, m, Hkv, G]
        out = torch.einsum(
            "bmhgk,bmhgkd->bmhgd", torch.exp(logits - lse[..., None]), values.expand(-1, -1, -1, G, -1, -1)
        )
        out, lse = out.reshape(B, -1, Hq, Dv), lse.reshape(B, -1, Hq)
        if backward:
            pairs = [(out, grad_out), (lse, grad_lse)]
            torch.autograd.backward(
                [t for t, g in pairs if g is not None],
                [g[:, sl].to(dev, torch.float64) for _, g in pairs if g is not None],
            )
        outs.append(out.detach())
        lses.append(lse.detach())
    grads = {}
    if backward:
        grads = {n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in x.items()}
    return torch.cat(outs, 1), torch.cat(lses, 1), grads


def tolerance(exact: Tensor, dtype: torch.dtype, terms: int = 1) -> tuple[float, str]:
    """``(atol, rule)``: 3x the largest error of rounding ``exact`` to ``dtype``, plus a floor of one
    eps of ``dtype`` at ``exact``'s largest magnitude, at least ``max(32, sqrt(terms))`` float32 eps:
    the kernels compute in float32, so a float32 result carries the accumulation error of a float32
    sum of ``terms`` products (the keys of a window), which grows like ``sqrt(terms)`` eps, not one
    rounding. A kernel that accumulates in float32 and rounds once stays inside; a wrong window, tile
    or load is off by orders of magnitude more."""
    e = exact.detach().to(torch.float64)
    finite = e[e.isfinite()]
    if finite.numel() == 0:
        return 0.0, f"no finite values ({dtype})"
    rounding = float((finite.to(dtype).to(torch.float64) - finite).abs().max())
    eps = max(torch.finfo(dtype).eps, max(32.0, math.sqrt(terms)) * torch.finfo(torch.float32).eps)
    floor = eps * float(finite.abs().max())
    return 3.0 * rounding + floor, f"3 x rounding to {dtype} {rounding:.2e} + floor {floor:.2e}"


def check_sampled(actual: Tensor, exact: Tensor, dtype: torch.dtype, name: str = "", terms: int = 1) -> Report:
    """Compare ``actual`` with the float64 ``exact`` under :func:`tolerance` (NaN/inf must match); the
    LSE (float32 whatever the inputs) takes ``dtype=torch.float32``; ``terms``: keys summed per result."""
    atol, rule = tolerance(exact, dtype, terms)
    rep = compare(actual, exact, atol=atol, rtol=0.0, name=name)
    rep.rule = rule
    return rep


_NAMES = ("q", "k", "v", "rpb", "additional_keys", "additional_values")


def verify(
    run,
    inputs: dict[str, Tensor],
    queries: Tensor,
    kernel_size,
    dilation=1,
    stride=1,
    is_causal=False,
    *,
    scale: float | None = None,
    backward: bool = True,
    seed: int = 0,
) -> list[Report]:
    """Check an implementation at sampled queries: output, LSE and (``backward``) every gradient.

    Args:
        run: ``run(grad_out, grad_lse) -> (out, lse, grads)``: the implementation on ``inputs``, with
            ``out [B, *S, Hq, Dv]``, ``lse [B, *S, Hq]`` and, when ``grad_out`` is not None, the
            gradients by input name for upstream gradients ``grad_out`` (``out``'s shape and dtype)
            and ``grad_lse`` (float32), both zero except at the sampled queries.
        inputs: ``q``, ``k``, ``v`` and optionally ``rpb``, ``additional_keys``,
            ``additional_values`` (heads-last layouts of :func:`sampled_reference`).
        queries: ``LongTensor [M, R]`` (:func:`sample_queries`).

    Returns:
        one :class:`Report` per result (``out``, ``lse``, ``d<name>``); check ``report.ok``.
    """
    q = inputs["q"]
    B, *S, H, _D = q.shape
    Dv, dev, dt = inputs["v"].shape[-1], q.device, q.dtype
    idx = flat_index(S, queries.to(dev))
    g = torch.Generator(dev).manual_seed(seed + 1)
    go = torch.randn(B, idx.numel(), H, Dv, device=dev, generator=g).to(dt) if backward else None
    gl = torch.randn(B, idx.numel(), H, device=dev, generator=g) if backward else None
    ex_o, ex_l, ex_g = sampled_reference(
        q,
        inputs["k"],
        inputs["v"],
        queries,
        kernel_size,
        dilation,
        stride,
        is_causal,
        rpb=inputs.get("rpb"),
        scale=scale,
        additional_keys=inputs.get("additional_keys"),
        additional_values=inputs.get("additional_values"),
        grad_out=go,
        grad_lse=gl,
    )
    grad_out = grad_lse = None
    if backward:
        N = math.prod(S)
        grad_out = torch.zeros(B, N, H, Dv, device=dev, dtype=dt)
        grad_out[:, idx] = go
        grad_lse = torch.zeros(B, N, H, device=dev)
        grad_lse[:, idx] = gl
        grad_out, grad_lse = grad_out.reshape(*q.shape[:-1], Dv), grad_lse.reshape(q.shape[:-1])
    out, lse, grads = run(grad_out, grad_lse)
    add = inputs.get("additional_keys")
    ks = (kernel_size,) * len(S) if isinstance(kernel_size, int) else kernel_size
    terms = math.prod(ks) + (0 if add is None else add.shape[1])  # keys summed per query
    if tuple(out.shape) != (*q.shape[:-1], Dv) or tuple(lse.shape) != tuple(q.shape[:-1]):
        raise AssertionError(f"out {list(out.shape)} / lse {list(lse.shape)} do not match q {list(q.shape)}")
    reports = [
        check_sampled(out.reshape(B, -1, H, Dv)[:, idx], ex_o, dt, "out", terms),
        check_sampled(lse.reshape(B, -1, H)[:, idx], ex_l, torch.float32, "lse", terms),
    ]
    for name in (n for n in _NAMES if n in ex_g):
        if grads[name].dtype != inputs[name].dtype:
            raise AssertionError(f"d{name} is {grads[name].dtype}, {name} is {inputs[name].dtype}")
        reports.append(check_sampled(grads[name], ex_g[name], inputs[name].dtype, "d" + name, terms))
    return reports


def summary(reports: list[Report]) -> str:
    """``out 0.21  lse 0.05  dq 0.30 ...``: each result's max error over its tolerance (<= 1 passes)."""
    return "  ".join(f"{r.name} {r.max_abs_err / r.atol if r.atol else 0.0:.2f}" for r in reports)
