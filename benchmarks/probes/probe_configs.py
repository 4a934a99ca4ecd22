"""Which Triton configurations compute wrong results, and where: forward (and optionally backward) of
sampled queries against the exact window (natten_legacy.sampled), per problem and per config, with the
TMA paths switched off one at a time. Prints one line per (problem, config): the error over the
tolerance (<= 1 passes), and the error as a multiple of the rounding error (the issue's "ratio").

    python benchmarks/probes/probe_configs.py [--only S3,S6] [--backward]
"""

# ruff: noqa: B023  (closures are timed within the loop iteration that defines them)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from natten_legacy.sampled import check_sampled, flat_index, sample_queries, sampled_reference

# id, spatial, B, H, D, dtype, kernel, dilation, stride, causal
PROBLEMS = {
    "S1": ((32768,), 2, 16, 128, torch.bfloat16, (2048,), (1,), (1,), (False,)),
    "S2": ((128, 128), 2, 16, 128, torch.bfloat16, (31, 31), (1, 1), (1, 1), (False, False)),
    "S3": ((256, 256), 1, 24, 128, torch.bfloat16, (80, 80), (1, 1), (1, 1), (False, False)),
    "S3-f16": ((256, 256), 1, 24, 128, torch.float16, (80, 80), (1, 1), (1, 1), (False, False)),
    "2d-k48": ((256, 256), 1, 24, 128, torch.bfloat16, (48, 48), (1, 1), (1, 1), (False, False)),
    "2d-k40": ((256, 256), 1, 24, 128, torch.bfloat16, (40, 40), (1, 1), (1, 1), (False, False)),
    "2d-96-k48": ((96, 96), 1, 8, 128, torch.bfloat16, (48, 48), (1, 1), (1, 1), (False, False)),
    "S6": ((30, 48, 80), 1, 24, 128, torch.bfloat16, (18, 24, 24), (1, 1, 1), (1, 1, 1), (False, False, False)),
    "2d-hd64": ((96, 96), 1, 8, 64, torch.bfloat16, (48, 48), (1, 1), (1, 1), (False, False)),
    "2d-hd32": ((96, 96), 1, 8, 32, torch.float16, (48, 48), (1, 1), (1, 1), (False, False)),
    "1d-hd128": ((4096,), 1, 8, 128, torch.bfloat16, (512,), (1,), (1,), (False,)),
    "3d-hd64": ((16, 24, 40), 1, 8, 64, torch.bfloat16, (8, 12, 24), (1, 1, 1), (1, 1, 1), (False, False, False)),
}
# forward configs: (label, config, patch) ; patch: "" | "noq" (query tile by pointer) | "device" (no
# host-built descriptors: per-program TMA)
FWD = [
    ("default", [], ""),
    ("128x128x8x3-tma-unguarded", [128, 128, 8, 3, 1], "unguarded"),
    ("default-noqtma", [], "noq"),
    ("default-devtma", [], "device"),
    ("128x128x8x3-ptr", [128, 128, 8, 3, 0], ""),
    ("128x128x8x2-tma", [128, 128, 8, 2, 1], ""),
    ("128x64x8x3-tma", [128, 64, 8, 3, 1], ""),
    ("64x64x4x3-tma", [64, 64, 4, 3, 1], ""),
    ("64x64x4x3-ptr", [64, 64, 4, 3, 0], ""),
    ("64x64x4x3-tma-noq", [64, 64, 4, 3, 1], "noq"),
]
BWD = [
    ("bwd-default", [], ""),
    ("bwd-dq-ptr", [64, 32, 4, 2, 0, 128, 64, 8, 3, 0], ""),
    ("bwd-dq-64x32", [64, 32, 4, 2, 0], ""),
]
BWD_GRID = [
    (f"bwd-{'x'.join(map(str, c))}-{m}", c, m)
    for c in (
        [64, 32, 4, 2, 0, 128, 128, 8, 2, 1],
        [64, 32, 4, 2, 0, 64, 64, 4, 2, 1],
        [64, 32, 4, 2, 0, 128, 64, 8, 2, 1],
        [128, 128, 8, 2, 0],
        [128, 64, 8, 2, 0],
        [64, 64, 4, 2, 0],
        [64, 32, 4, 2, 0],
    )
    for m in ("noguard", "")
]


def patch(mode: str):
    """Modes, joined by '+': noq, device, noguard (no streamed-tile TMA guard), unguarded (no resident-tile
    guard either: the miscompiled path), box=A.B.C/D.E.F (query/key boxes)."""
    from natten_kernels.triton import configs, launch_forward, tma

    orig = tma.__dict__.setdefault("_orig_descriptor_spec", tma.descriptor_spec)
    guard = tma.__dict__.setdefault("_orig_streamed_tiles_ok", tma.streamed_tiles_ok)
    resident = tma.__dict__.setdefault("_orig_resident_tiles_ok", tma.resident_tiles_ok)
    shapes = configs.__dict__.setdefault("_orig_tile_shapes", configs.tile_shapes)
    qptr = patch.qptr
    modes = mode.split("+")

    def spec(x, dim, box, dl):
        if "device" in modes or ("noq" in modes and x.data_ptr() == qptr):
            return None
        return orig(x, dim, box, dl)

    tma.descriptor_spec = spec
    tma.streamed_tiles_ok = (lambda *a: True) if "noguard" in modes else guard
    tma.resident_tiles_ok = (lambda *a: True) if "unguarded" in modes else resident
    boxes = [m[4:] for m in modes if m.startswith("box=")]
    if boxes:
        qb, kb = (tuple(int(x) for x in b.split(".")) for b in boxes[0].split("/"))
        configs.tile_shapes = lambda *a, **k: (qb, kb)
    else:
        configs.tile_shapes = shapes
    launch_forward.clear_plans()


patch.qptr = 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--configs", default="", help="labels of forward configs (default: all)")
    ap.add_argument("--backward", action="store_true")
    ap.add_argument("--grid", action="store_true", help="forward: blocks x TMA x guard grid instead")
    ap.add_argument("--time", action="store_true", help="also the forward's median ms (do_bench), wrong or not")
    args = ap.parse_args()
    from natten_kernels.triton.launch_backward import na_fused_backward
    from natten_kernels.triton.launch_forward import na_fused_forward

    only = [x for x in args.only.split(",") if x] or list(PROBLEMS)
    labels = [x for x in args.configs.split(",") if x]
    for pid in only:
        spatial, B, H, D, dt, ks, dl, st, cz = PROBLEMS[pid]
        g = torch.Generator("cuda").manual_seed(0)
        q, k, v = (torch.randn(B, *spatial, H, D, device="cuda", dtype=dt, generator=g) for _ in range(3))
        patch.qptr = q.data_ptr()
        qs = sample_queries(spatial, ks, dl, per_case=2, extra=8)
        idx = flat_index(spatial, qs).cuda()
        M = qs.shape[0]
        go = torch.randn(B, M, H, D, device="cuda", dtype=torch.float64, generator=g).to(dt).double()
        t0 = time.time()
        ex_o, ex_l, ex_g = sampled_reference(q, k, v, qs, ks, dl, st, cz, grad_out=go if args.backward else None)
        print(f"== {pid}: {M} sampled queries, reference {time.time() - t0:.1f}s", flush=True)
        good_out = None
        fwd = FWD
        if args.grid:
            fwd = [
                (f"{bq}x{bk}-{m}", [bq, bk, 8 if bq >= 128 else 4, 2, 1], m)
                for bq, bk in ((128, 128), (128, 64), (64, 64), (64, 128), (128, 32), (64, 32))
                for m in ("noguard", "noguard+noq")
            ]
            if len(spatial) == 2 and D == 128:
                fwd += [
                    (f"128x128-box{b}", [128, 128, 8, 2, 1], f"noguard+box={b}")
                    for b in (
                        "1.1.128/1.1.128",
                        "1.2.64/1.2.64",
                        "1.4.32/1.4.32",
                        "1.16.8/1.16.8",
                        "1.8.16/1.1.128",
                        "1.1.128/1.8.16",
                    )
                ]
        for label, cfg, mode in fwd:
            if labels and label not in labels:
                continue
            patch(mode)
            t0 = time.time()
            try:
                out, lse = na_fused_forward(q, k, v, None, None, None, ks, dl, st, cz, D**-0.5, cfg)
                torch.cuda.synchronize()
            except Exception as e:  # report and go on: this is a probe
                print(f"  {label:22s} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            o_s = out.reshape(B, -1, H, D)[:, idx]
            l_s = lse.reshape(B, -1, H)[:, idx]
            ro = check_sampled(o_s, ex_o, dt, "out")
            rl = check_sampled(l_s, ex_l, torch.float32, "lse")
            rnd = (ex_o.to(dt).double() - ex_o).abs().max().item()
            bad_q = (o_s.double() - ex_o).abs().amax(dim=(0, 2, 3)) > ro.atol
            where = qs[bad_q.cpu()][:6].tolist()
            ms = ""
            if args.time:
                import triton

                def fwd():
                    return na_fused_forward(q, k, v, None, None, None, ks, dl, st, cz, D**-0.5, cfg)

                ms = f"{triton.testing.do_bench(fwd, warmup=25, rep=200, return_mode='median'):7.3f} ms  "
            print(
                f"  {label:22s} {ms}out err/tol {ro.max_abs_err / ro.atol:8.2f} ratio {ro.max_abs_err / rnd:8.1f}  "
                f"lse err {rl.max_abs_err:.2e} (tol {rl.atol:.1e})  bad queries {int(bad_q.sum())}/{M} {where} "
                f"[{time.time() - t0:.0f}s]",
                flush=True,
            )
            if ro.ok and rl.ok and good_out is None:
                good_out = (out, lse)
        patch("")
        if not args.backward or good_out is None:
            continue
        out, lse = good_out
        dout = torch.zeros_like(out).reshape(B, -1, H, D)
        dout[:, idx] = go.to(dt)
        dout = dout.reshape(out.shape)
        for label, cfg, mode in BWD_GRID if args.grid else BWD:
            patch(mode)
            try:
                dq, dk, dv, *_ = na_fused_backward(
                    dout, q, k, v, out, lse, None, None, None, None, ks, dl, st, cz, D**-0.5, cfg
                )
                torch.cuda.synchronize()
            except Exception as e:
                print(f"  {label:22s} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            parts = []
            for n, got in (("q", dq), ("k", dk), ("v", dv)):
                rep = check_sampled(got, ex_g[n], dt, "d" + n)
                rnd = (ex_g[n].to(dt).double() - ex_g[n]).abs().max().item()
                parts.append(f"d{n} err/tol {rep.max_abs_err / rep.atol:6.2f} ratio {rep.max_abs_err / rnd:6.1f}")
            print(f"  {label:22s} " + "  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
