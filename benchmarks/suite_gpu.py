"""The GPU suite (docs/gpu.md, S1-S7): natten's Triton kernels beside dense SDPA (cuDNN, flash),
FlexAttention with a neighborhood BlockMask, and Flex with no mask (a plain Triton dense-attention
kernel), all in the same run. ``python benchmarks/run.py --suite gpu [--only S1,S3] [--no-flex]``.

Effective TFLOP/s = 4 * B * H * N * K * D / time (backward counts 2.5x forward); ratios are against
cuDNN dense SDPA measured in this run; medians of ``triton.testing.do_bench`` (L2 flushed by it).
Tile efficiency = useful (query, key) pairs / pairs the kernel computes (from its tile shapes).

Flex runs on tokens permuted into tiles (2D/3D: each 128-token Flex block is a spatial box, so the
BlockMask is as sparse as natten's tiles; the permutation is done once, outside the timing), with the
tiles, tables and BlockMask of natten's flex backend (natten_kernels/backends/flex.py), and dynamo
reset per problem (new shapes would otherwise hit its recompile limit and fall back to the unfused
path). ``natten-flex`` rows time that backend's whole forward (permutation and LSE included);
``natten-autotuned`` rows time natten with the forward autotuner on, which picks the fastest (backend,
config) pair of triton and flex (FLASH included where installed), the pair in the row's ``config``.

``--sweep`` times every autotuner candidate of the triton backend (and ``--configs``) per problem,
forward and backward, compiling them first in parallel (``--precompile`` workers); its rows
(``sweep-forward`` / ``sweep-backward``) carry the tile efficiency and the raw rate (pairs computed per
second), from which triton/tiling.py's rate tables are calibrated.
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import replace

import torch

from common import Recorder

# id, spatial, B, H, D, dtype, kernel, dilation, stride, causal
PROBLEMS = [
    ("S1", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (1,), (False,)),
    ("S1-causal", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (1,), (True,)),
    ("S1-s256", (32768,), 2, 16, 128, "bf16", (2048,), (1,), (256,), (False,)),
    ("S2", (128, 128), 2, 16, 128, "bf16", (31, 31), (1, 1), (1, 1), (False, False)),
    ("S3", (256, 256), 1, 24, 128, "bf16", (80, 80), (1, 1), (1, 1), (False, False)),
    ("S3-s16", (256, 256), 1, 24, 128, "bf16", (80, 80), (1, 1), (16, 16), (False, False)),
    ("S4", (128, 128), 16, 16, 64, "fp16", (13, 13), (1, 1), (1, 1), (False, False)),
    ("S5-d1", (56, 56), 128, 4, 32, "fp16", (7, 7), (1, 1), (1, 1), (False, False)),
    ("S5-d8", (56, 56), 128, 4, 32, "fp16", (7, 7), (8, 8), (1, 1), (False, False)),
    ("S6", (30, 48, 80), 1, 24, 128, "bf16", (18, 24, 24), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ("S6-s", (30, 48, 80), 1, 24, 128, "bf16", (18, 24, 24), (1, 1, 1), (16, 8, 8), (False, False, False)),
    ("S7-causal", (24, 44, 80), 1, 16, 128, "bf16", (8, 12, 24), (1, 1, 1), (1, 1, 1), (True, False, False)),
    ("S7-dil", (24, 44, 80), 1, 16, 128, "bf16", (24, 4, 16), (1, 11, 5), (1, 1, 1), (False, False, False)),
]
TARGETS = {"S1": 0.65, "S1-s256": 0.75, "S2": 0.40, "S3": 0.55, "S3-s16": 0.75, "S6": 0.40, "S6-s": 0.75}
FWD_BWD_TARGETS = {"S1": 0.65, "S2": 0.30, "S6": 0.30}  # forward+backward / cuDNN forward+backward
GBPS_TARGET = 0.6 * 4800  # memory-bound problems: 60% of the H200's 4.8 TB/s on the q/k/v/o bytes
MEMORY_BOUND = ("S4", "S5-d1", "S5-d8")
DT = {"bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gpu suite")
    g.add_argument("--only", default="", help="comma-separated problem ids (default: all)")
    g.add_argument("--no-flex", action="store_true", help="skip FlexAttention anchors (compile time)")
    g.add_argument("--no-backward", action="store_true")
    g.add_argument("--sweep", action="store_true", help="time every autotuner candidate config instead")
    g.add_argument("--configs", default="", help="extra forward sweep configs, e.g. '128,64,8,2;64,32,4,3,1'")
    g.add_argument("--directions", default="forward,backward,backward-kv", help="sweep: what to time")
    g.add_argument("--precompile", type=int, default=12, metavar="N", help="sweep: compile in N processes")


def bench(fn, rep: int = 200) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))


def _selected(args):
    only = {x for x in args.only.split(",") if x}
    return [p for p in PROBLEMS if not only or p[0] in only]


def inputs(problem, seed=0):
    _pid, spatial, B, H, D, dts, *_ = problem
    g = torch.Generator("cuda").manual_seed(seed)
    return tuple(torch.randn(B, *spatial, H, D, device="cuda", dtype=DT[dts], generator=g) for _ in range(3))


def _flex_anchors(problem, q, k, v, qh, kh, vh, reference, sampled) -> dict:
    """Flex dense and Flex with the neighborhood mask (tokens permuted into tiles: natten's flex backend
    builds both), ms; also the max difference of Flex's NA output from ``reference`` (natten's) against
    twice the dtype's tolerance, and Flex's own output at the sampled queries against the exact windows
    (``sampled``). ``natten-flex`` times the backend's whole forward (permutation and LSE included)."""
    import torch._dynamo
    from natten_kernels.backends import flex as natten_flex
    from natten_legacy.sampled import check_sampled, tolerance
    from torch.nn.attention.flex_attention import flex_attention

    _pid, spatial, *_rest, kernel, dil, stride, causal = problem
    torch._dynamo.reset()  # fresh shapes per problem: stay under the recompile limit
    flex = torch.compile(flex_attention)
    res = {"flex-dense": bench(lambda: flex(qh, kh, vh))}
    geo = natten_flex.geometry(spatial, kernel, dil, stride, causal, str(q.device))
    qt, kt, vt = (natten_flex.to_tiles(x, spatial, geo.box) for x in (q, k, v))
    bm = geo.block_mask
    res["flex-na"] = bench(lambda: flex(qt, kt, vt, block_mask=bm))
    out = natten_flex.from_tiles(flex(qt, kt, vt, block_mask=bm), spatial, geo.box)
    qs, exact = sampled
    res["flex_max_diff"] = float((out.float() - reference.float()).abs().max())
    res["flex_diff_ok"] = res["flex_max_diff"] <= 2 * tolerance(exact, q.dtype)[0]
    res["flex_ok"] = check_sampled(_at(out, spatial, qs), exact, q.dtype).ok
    args = (None, None, None, list(kernel), list(dil), list(stride), list(causal), q.shape[-1] ** -0.5)
    kernels = [("natten-flex", [])]
    if natten_flex.flash_available():  # Flex's FLASH (FlashAttention-4) kernels, where they are installed
        kernels.append(("natten-flex-flash", [natten_flex.FLASH]))
    for name, config in kernels:
        try:
            ok = check_sampled(_at(natten_flex.forward(q, k, v, *args, config)[0], spatial, qs), exact, q.dtype).ok
        except Exception as e:  # a kernel that cannot compile this problem is reported, not fatal
            print(f"  {_pid}: {name} failed: {e!s:.200}")
            continue
        if ok:
            res[name] = bench(lambda c=config: natten_flex.forward(q, k, v, *args, c))
        else:
            print(f"  {_pid}: {name} INVALID at the sampled queries")
    return res


def _autotuned(na, q, spatial, sampled) -> tuple[float | None, str]:
    """natten with the forward autotuner on: its first call times every fitting backend's candidates
    (triton, flex, flex's FLASH where installed) and keeps the fastest pair, which the row then times;
    also which pair that was."""
    from natten_legacy.sampled import check_sampled

    from natten import autotuner, context

    autotuner.clear_cache()
    context.use_autotuner(forward_pass=True)
    try:
        out = na()
        backend, config = next(iter(autotuner.cached_configs().values()))
        qs, exact = sampled
        ms = bench(na) if check_sampled(_at(out, spatial, qs), exact, q.dtype).ok else None
    finally:
        context.use_autotuner(forward_pass=False)
        autotuner.clear_cache()
    return ms, f"{backend.name} {list(config)}"


def _sampled(problem, q, k, v):
    """Sampled queries (corners, edges, interior, random) and their exact outputs (float64)."""
    from natten_legacy.sampled import sample_queries, sampled_reference

    _pid, spatial, *_rest, kernel, dil, stride, causal = problem
    qs = sample_queries(spatial, kernel, dil, extra=6)
    out, _lse, _g = sampled_reference(q, k, v, qs, kernel, dil, stride, causal)
    return qs, out


def _at(x, spatial, qs):
    """``x [B, *spatial, H, D]`` at the sampled queries: ``[B, M, H, D]``."""
    from natten_legacy.sampled import flat_index

    return x.reshape(x.shape[0], -1, *x.shape[-2:])[:, flat_index(spatial, qs).to(x.device)]


def _validate(problem, fn, q, k, v, backward: bool) -> tuple[bool, str]:
    """natten's results at sampled queries against the exact windows (forward: output and LSE;
    backward: also dq, dk, dv) before anything of it is timed: ``(ok, error / tolerance summary)``."""
    from natten_legacy.sampled import sample_queries, summary, verify

    _pid, spatial, *_rest, kernel, dil, stride, causal = problem
    qs = sample_queries(spatial, kernel, dil, extra=6)

    def run(go, gl):
        x = [t.detach().requires_grad_(go is not None) for t in (q, k, v)]
        out, lse = fn(*x, kernel, dil, causal, stride=stride, return_lse=True)
        if go is None:
            return out, lse, {}
        torch.autograd.backward((out, lse), (go, gl))
        return out, lse, dict(zip("qkv", (t.grad for t in x)))

    reports = verify(run, {"q": q, "k": k, "v": v}, qs, kernel, dil, stride, causal, backward=backward)
    return all(r.ok for r in reports), summary(reports)


def _resolved(problem, config, backward=False):
    """The config the launcher really runs for ``config`` (``[]``/``0`` entries resolved)."""
    from natten_kernels.triton.configs import parse_config

    _pid, spatial, _B, _H, D, dts, kernel, dil, stride, causal = problem
    return list(
        parse_config(config, D, DT[dts], (spatial, kernel, dil, stride, causal), backward, torch.device("cuda"))
    )


def _tile_efficiency(problem, cfg) -> float:
    from natten_kernels.triton.tiling import tile_efficiency, tile_shapes

    _pid, spatial, _B, _H, _D, _dt, kernel, dil, stride, causal = problem
    qbox, kbox = tile_shapes(kernel, dil, stride, spatial, cfg[0], cfg[1], causal)
    return tile_efficiency(spatial, kernel, dil, stride, causal, qbox, kbox)


def _attended(spatial, kernel, dil, stride, causal) -> float:
    from natten_kernels.window import axis_pairs

    return float(math.prod(axis_pairs(*axis) for axis in zip(spatial, kernel, dil, stride, causal)))


def useful_flops(problem) -> float:
    _pid, spatial, B, H, D, _dt, kernel, dil, stride, causal = problem
    N = math.prod(spatial)
    K = _attended(spatial, kernel, dil, stride, causal) / N if any(causal) else math.prod(kernel)
    return 4 * B * H * N * K * D


def _row(problem) -> dict:
    pid, spatial, B, H, D, dts, kernel, dil, stride, causal = problem
    return {
        "problem": pid,
        "spatial": list(spatial),
        "B": B,
        "H": H,
        "D": D,
        "dtype": dts,
        "kernel": list(kernel),
        "dilation": list(dil),
        "stride": list(stride),
        "causal": list(causal),
    }


def cudnn(qh, kh, vh, backward: bool):
    """(forward ms, forward+backward ms or None) of cuDNN dense SDPA."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        fwd = bench(lambda: sdpa(qh, kh, vh))
    if not backward:
        return fwd, None
    qd, kd, vd = (x.detach().requires_grad_(True) for x in (qh, kh, vh))
    god = torch.randn_like(qh)

    def dfb():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            o = sdpa(qd, kd, vd)
        torch.autograd.grad(o, (qd, kd, vd), god)

    dfb()
    return fwd, bench(dfb)


def run(args: argparse.Namespace) -> tuple[Recorder, bool]:
    if args.sweep:
        return sweep(args), True
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    import natten.functional as F

    rec = Recorder("gpu", "cuda")
    met = True
    lines = []
    verdicts = []  # (problem, what, value, target)
    for problem in _selected(args):
        pid, spatial, B, H, D, _dt, kernel, dil, stride, causal = problem
        N = math.prod(spatial)
        flops = useful_flops(problem)
        q, k, v = inputs(problem)
        row = _row(problem)
        res = {}
        flex_diff = flex_ok = flex_diff_ok = tuned = None
        t0 = time.perf_counter()
        fn = {1: F.na1d, 2: F.na2d, 3: F.na3d}[len(spatial)]
        na = functools.partial(fn, q, k, v, kernel, dil, causal, stride=stride)
        na()
        torch.cuda.synchronize()
        first_call = time.perf_counter() - t0
        sampled = _sampled(problem, q, k, v)
        valid, errors = _validate(problem, fn, q, k, v, backward=False)
        print(f"{pid:10s} check    natten-triton  {'ok' if valid else 'INVALID'}  error/tolerance {errors}", flush=True)
        if valid:
            res["natten-triton"] = bench(na)
        else:
            met = False
            rec.add("forward", **row, impl="natten-triton", invalid=True, check=errors)
        qh, kh, vh = (x.reshape(B, N, H, D).transpose(1, 2).contiguous() for x in (q, k, v))
        for name, backend in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    res[name] = bench(lambda: sdpa(qh, kh, vh))
            except Exception as e:
                print(f"  {pid}: {name} unavailable: {e!s:.80}")
        if not args.no_flex:
            try:
                flex_res = _flex_anchors(problem, q, k, v, qh, kh, vh, na(), sampled)
                flex_diff = flex_res.pop("flex_max_diff")
                flex_diff_ok = flex_res.pop("flex_diff_ok")
                flex_ok = flex_res.pop("flex_ok")
                if not (flex_ok and flex_diff_ok):
                    print(
                        f"  {pid}: flex-na MISMATCH: own check {'ok' if flex_ok else 'FAILED'}, "
                        f"max diff vs natten {flex_diff:.1e} {'ok' if flex_diff_ok else 'beyond tolerance'}"
                    )
                res.update(flex_res)
            except Exception as e:
                print(f"  {pid}: flex unavailable: {e!s:.120}")
            tuned_ms, tuned = _autotuned(na, q, spatial, sampled)
            print(f"{pid:10s} autotuner chose {tuned}" + ("" if tuned_ms else ": INVALID at the sampled queries"))
            if tuned_ms:
                res["natten-autotuned"] = tuned_ms
            else:
                met = False
        dense_flops = 4 * B * H * N * N * D
        cudnn = res.get("sdpa-cudnn")
        cudnn_rate = dense_flops / (cudnn * 1e-3) if cudnn else None
        bytes_moved = 4 * B * N * H * D * q.element_size()
        cfg = _resolved(problem, [])
        eff = _tile_efficiency(problem, cfg)
        for impl, ms in res.items():
            useful = flops if impl.startswith("natten") or impl == "flex-na" else dense_flops
            rate = useful / (ms * 1e-3)
            ours = impl == "natten-triton"
            lines.append(
                rec.add(
                    "forward",
                    **row,
                    impl=impl,
                    ms=ms,
                    tflops=rate / 1e12,
                    ratio_vs_cudnn=(rate / cudnn_rate) if cudnn_rate else None,
                    gbps=bytes_moved / (ms * 1e-3) / 1e9 if ours else None,
                    tile_efficiency=eff if ours else None,
                    config=cfg if ours else (tuned if impl == "natten-autotuned" else None),
                    first_call_s=first_call if ours else None,
                    max_diff_vs_natten=flex_diff if impl == "flex-na" else None,
                    max_diff_ok=flex_diff_ok if impl == "flex-na" else None,
                    valid=True if impl.startswith("natten") else (flex_ok if impl == "flex-na" else None),
                )
            )
        if pid in TARGETS and cudnn_rate and valid:
            ratio = flops / (res["natten-triton"] * 1e-3) / cudnn_rate
            verdicts.append((pid, "forward x cuDNN", ratio, TARGETS[pid]))
        if pid in MEMORY_BOUND and valid:
            gbps = bytes_moved / (res["natten-triton"] * 1e-3) / 1e9
            verdicts.append((pid, "forward GB/s", gbps, GBPS_TARGET))
        if not args.no_backward:
            bwd_ok, bwd_errors = _validate(problem, fn, q, k, v, backward=True)
            state = "ok" if bwd_ok else "INVALID"
            print(f"{pid:10s} check    fwd+bwd        {state}  error/tolerance {bwd_errors}", flush=True)
            if not bwd_ok:
                met = False
                rec.add("fwd+bwd", **row, impl="natten-triton", invalid=True, check=bwd_errors)
        if not args.no_backward and bwd_ok:
            lines.append(_fwd_bwd_row(rec, problem, fn, q, k, v, qh, kh, vh, flops, dense_flops))
            if pid in FWD_BWD_TARGETS and lines[-1]["ratio_vs_cudnn"] is not None:
                verdicts.append((pid, "fwd+bwd x cuDNN", lines[-1]["ratio_vs_cudnn"], FWD_BWD_TARGETS[pid]))
        _print_problem(pid, [r for r in lines if r["problem"] == pid])
        del q, k, v
        torch.cuda.empty_cache()
    print("targets (issue 4; one run, so ratios within a few percent of a target need repeated runs):")
    for pid, what, value, target in verdicts:
        ok = value >= target
        met &= ok
        print(f"  {pid:10s} {what:16s} {value:8.3f}  target {target:8.3f}  {'met' if ok else 'NOT met'}")
    return rec, met


def _fwd_bwd_row(rec, problem, fn, q, k, v, qh, kh, vh, flops, dense_flops):
    pid, _spatial, _B, _H, _D, _dt, kernel, dil, stride, causal = problem
    qg, kg, vg = (x.detach().requires_grad_(True) for x in (q, k, v))
    out = fn(qg, kg, vg, kernel, dil, causal, stride=stride)
    go = torch.randn_like(out)

    def fb():
        o = fn(qg, kg, vg, kernel, dil, causal, stride=stride)
        torch.autograd.grad(o, (qg, kg, vg), go)

    fb()
    ms = bench(fb)
    rate = 3.5 * flops / (ms * 1e-3)
    dense_fb = None
    try:
        dense_fb = cudnn(qh, kh, vh, True)[1]
    except Exception as e:
        print(f"  {pid}: cudnn backward unavailable: {e!s:.80}")
    ratio = rate / (3.5 * dense_flops / (dense_fb * 1e-3)) if dense_fb else None
    return rec.add(
        "fwd+bwd",
        **_row(problem),
        impl="natten-triton",
        ms=ms,
        tflops=rate / 1e12,
        ratio_vs_cudnn=ratio,
        cudnn_fwd_bwd_ms=dense_fb,
        config=_resolved(problem, [], backward=True),
    )


def _print_problem(pid, rows):
    for r in rows:
        ratio = f"{r['ratio_vs_cudnn']:.2f}" if r.get("ratio_vs_cudnn") is not None else "-"
        extra = ""
        if r.get("tile_efficiency") is not None:
            extra = f" tile-eff {r['tile_efficiency']:.2f}  {r['gbps']:.0f} GB/s  first call {r['first_call_s']:.1f}s"
        if r.get("config"):
            extra += f"  cfg {r['config']}"
        if r.get("max_diff_vs_natten") is not None:
            verdict = "within tolerance" if r.get("max_diff_ok") else "MISMATCH"
            extra += f"  max diff vs natten {r['max_diff_vs_natten']:.1e} ({verdict})"
        print(
            f"{pid:10s} {r['kind']:8s} {r['impl']:14s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s  "
            f"x cuDNN {ratio}{extra}",
            flush=True,
        )


# ----------------------------------------------------------------------------- sweep


def _sweep_jobs(args):
    """(problem, direction, config) for every candidate of the backend (and --configs), deduplicated
    after resolution; backward candidates with and without KV parallelism."""
    from natten_kernels.backends import TuningInfo
    from natten_kernels.backends.triton import TRITON

    extra = [[int(x) for x in c.split(",")] for c in args.configs.split(";") if c]
    wanted = set(args.directions.split(","))
    jobs = []
    for problem in _selected(args):
        _pid, spatial, B, H, D, *_ = problem
        info = TuningInfo(B, H, H, math.prod(spatial), D)
        for direction, cands in (
            ("forward", TRITON.forward_configs(info) + extra),
            ("backward", TRITON.backward_configs(info)),
            ("backward-kv", TRITON.backward_configs(replace(info, kv_parallel=True))),
        ):
            if direction not in wanted:
                continue
            seen = set()
            for c in cands:
                cfg = tuple(_resolved(problem, c, backward=direction != "forward"))
                if cfg not in seen:
                    seen.add(cfg)
                    jobs.append((problem, direction, list(cfg)))
    return jobs


def _run_job(problem, direction, cfg, tensors):
    """One call of the launcher(s) for a sweep job; returns a callable to time."""
    from natten_kernels.triton.launch_backward import na_fused_backward
    from natten_kernels.triton.launch_forward import na_fused_forward

    _pid, _spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
    q, k, v = tensors
    args = (list(kernel), list(dil), list(stride), list(causal), D**-0.5)
    if direction == "forward":
        return lambda: na_fused_forward(q, k, v, None, None, None, *args, cfg)
    out, lse = na_fused_forward(q, k, v, None, None, None, *args, [])
    go = torch.randn_like(out)
    return lambda: na_fused_backward(go, q, k, v, out, lse, None, None, None, None, *args, cfg)


def _check_job(problem, direction, cfg, tensors) -> tuple[bool, str]:
    """A sweep job's results at sampled queries against the exact windows (as the suite's rows)."""
    from natten_kernels.triton.launch_backward import na_fused_backward
    from natten_kernels.triton.launch_forward import na_fused_forward
    from natten_legacy.sampled import sample_queries, summary, verify

    _pid, spatial, _B, _H, D, _dt, kernel, dil, stride, causal = problem
    q, k, v = tensors
    args = (list(kernel), list(dil), list(stride), list(causal), D**-0.5)

    def run(go, gl):
        out, lse = na_fused_forward(q, k, v, None, None, None, *args, cfg if direction == "forward" else [])
        if go is None:
            return out, lse, {}
        dq, dk, dv, *_ = na_fused_backward(go, q, k, v, out, lse, gl, None, None, None, *args, cfg)
        return out, lse, {"q": dq, "k": dk, "v": dv}

    qs = sample_queries(spatial, kernel, dil, extra=6)
    reports = verify(run, {"q": q, "k": k, "v": v}, qs, kernel, dil, stride, causal, backward=direction != "forward")
    return all(r.ok for r in reports), summary(reports)


def _warm(job):
    """Compile one sweep job in a worker process (fills triton's on-disk cache); '' or the error."""
    try:
        problem, direction, cfg = job
        _run_job(problem, direction, cfg, inputs(problem))()
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{type(e).__name__}: {e!s:.200}"


def sweep(args) -> Recorder:
    """Time every sweep job (compiled first in ``--precompile`` worker processes; a job that fails to
    compile or run there is reported and skipped here, so a bad config cannot poison this process)."""
    import multiprocessing as mp

    rec = Recorder("gpu-sweep", "cuda")
    jobs = _sweep_jobs(args)
    t0 = time.perf_counter()
    errors = {}
    if args.precompile > 1:
        with mp.get_context("spawn").Pool(args.precompile) as pool:
            for job, err in zip(jobs, pool.map(_warm, jobs, chunksize=1)):
                if err:
                    errors[(job[0][0], job[1], tuple(job[2]))] = err
    print(f"sweep: {len(jobs)} jobs compiled in {time.perf_counter() - t0:.0f}s, {len(errors)} failed", flush=True)
    current, tensors = None, None
    for problem, direction, cfg in jobs:
        pid, spatial, B, H, D, *_ = problem
        if current is not problem:
            current, tensors = problem, inputs(problem)
            qh, kh, vh = (x.reshape(B, -1, H, D).transpose(1, 2).contiguous() for x in tensors)
            cudnn_fwd, cudnn_fb = cudnn(qh, kh, vh, "backward" in args.directions)
            del qh, kh, vh
        key = (pid, direction, tuple(cfg))
        row = {**_row(problem), "direction": direction, "config": cfg}
        if key in errors:
            rec.add("sweep", **row, error=errors[key])
            print(f"{pid:10s} {direction:12s} {cfg!s:22s} FAILED {errors[key][:100]}", flush=True)
            continue
        try:
            valid, errors = _check_job(problem, direction, cfg, tensors)
            if not valid:  # a wrong kernel gets no rate
                rec.add("sweep", **row, invalid=True, check=errors)
                print(f"{pid:10s} {direction:12s} {cfg!s:22s} INVALID error/tolerance {errors}", flush=True)
                continue
            fn = _run_job(problem, direction, cfg, tensors)
            ms = bench(fn, rep=100)
        except Exception as e:
            rec.add("sweep", **row, error=f"{type(e).__name__}: {e!s:.200}")
            print(f"{pid:10s} {direction:12s} {cfg!s:22s} FAILED {e!s:.100}", flush=True)
            continue
        flops = useful_flops(problem) * (1.0 if direction == "forward" else 2.5)  # the backward counts 2.5x
        dense_ms = cudnn_fwd if direction == "forward" else (cudnn_fb and cudnn_fb - cudnn_fwd)
        eff = _tile_efficiency(problem, cfg)
        # useful FLOPs per ms over cuDNN's dense FLOPs per ms (the same 1x / 2.5x factor on both sides)
        ratio = (
            (useful_flops(problem) / ms) / (4 * B * H * math.prod(spatial) ** 2 * D / dense_ms) if dense_ms else None
        )
        r = rec.add(
            "sweep",
            **row,
            ms=ms,
            tflops=flops / (ms * 1e-3) / 1e12,
            raw_tflops=flops / eff / (ms * 1e-3) / 1e12,
            ratio_vs_cudnn=ratio,
            tile_efficiency=eff,
            gbps=4 * B * math.prod(spatial) * H * D * tensors[0].element_size() / (ms * 1e-3) / 1e9,
            check=errors,
        )
        print(
            f"{pid:10s} {direction:12s} {cfg!s:22s} {ms:8.3f} ms {r['tflops']:6.1f} TFLOP/s"
            f" (raw {r['raw_tflops']:6.1f})"
            f" x cuDNN {ratio if ratio is None else round(ratio, 3)} eff {eff:.3f} {r['gbps']:6.0f} GB/s"
            f"  error/tolerance {errors}",
            flush=True,
        )
    return rec
