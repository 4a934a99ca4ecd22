"""Run every implementation on one problem and collect a row per implementation."""

from __future__ import annotations

import gc
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import torch

from natten.profiler.implementations import IMPLEMENTATIONS, Unavailable
from natten.profiler.memory import peak_bytes
from natten.profiler.problem import ProfileProblem
from natten.profiler.timing import time_forward_backward

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    impl: str  # key in IMPLEMENTATIONS
    label: str
    status: str  # "ok", "skipped" (cannot run here) or "failed" (raised)
    note: str = ""
    forward_ms: float | None = None  # medians
    backward_ms: float | None = None
    forward_min_ms: float | None = None
    forward_max_ms: float | None = None
    backward_min_ms: float | None = None
    backward_max_ms: float | None = None
    forward_samples: int = 0
    backward_samples: int = 0
    forward_peak_bytes: int | None = None  # peak memory of one forward (as timed) beyond its inputs
    fwd_bwd_peak_bytes: int | None = None  # of one forward + backward
    forward_flop: int = 0  # useful FLOPs of the problem, the same for every implementation
    backward_flop: int = 0
    forward_bytes: int = 0  # least memory traffic of the problem
    backward_bytes: int = 0
    max_abs_diff: float | None = None  # of the output against natten's

    @property
    def total_ms(self) -> float | None:
        if self.forward_ms is None:
            return None
        return self.forward_ms + (self.backward_ms or 0.0)

    def rate(self, what: str, per: str = "flop") -> float | None:
        """Effective FLOP/s (``per="flop"``) or bytes/s (``per="bytes"``) of ``"forward"``/``"backward"``."""
        ms = getattr(self, f"{what}_ms")
        amount = getattr(self, f"{what}_{per}")
        return amount / (ms * 1e-3) if ms else None

    def as_dict(self) -> dict:
        d = asdict(self)
        for what in ("forward", "backward"):
            flop_rate, byte_rate = self.rate(what), self.rate(what, "bytes")
            d[f"{what}_tflops"] = flop_rate / 1e12 if flop_rate else None
            d[f"{what}_gbps"] = byte_rate / 1e9 if byte_rate else None
        return d


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, Unavailable) else text


def profile(
    problem: ProfileProblem,
    impls: Iterable[str] = tuple(IMPLEMENTATIONS),
    *,
    backward: bool = True,
    warmup: int = 1,
    iters: int = 10,
    max_seconds: float = 3.0,
    progress: Progress | None = stderr_progress,
) -> list[Row]:
    """Time each implementation on ``problem``; natten first, so the others are checked against it.

    A baseline that cannot run (not installed, too large) gives a ``skipped`` row, one that raises a
    ``failed`` row; neither stops the others.
    """
    order = sorted(dict.fromkeys(impls), key=lambda key: key != "natten")
    say = progress or (lambda _: None)
    fwd_flop, bwd_flop = problem.useful_flops()
    fwd_bytes, bwd_bytes = problem.ideal_bytes()
    if not backward:
        bwd_flop = bwd_bytes = 0
    qkv = problem.inputs(requires_grad=False)
    reference: torch.Tensor | None = None
    rows = []
    for n, key in enumerate(order, 1):
        row = Row(
            key,
            IMPLEMENTATIONS[key].label,
            "ok",
            forward_flop=fwd_flop,
            backward_flop=bwd_flop,
            forward_bytes=fwd_bytes,
            backward_bytes=bwd_bytes,
        )
        out = _measure(
            row,
            problem,
            qkv,
            f"[{n}/{len(order)}]",
            say,
            backward=backward,
            warmup=warmup,
            iters=iters,
            max_seconds=max_seconds,
        )
        if out is not None and key == "natten":
            reference = out
        elif out is not None and reference is not None:
            row.max_abs_diff = (out.double() - reference.double()).abs().max().item()
        rows.append(row)
        out = None
        gc.collect()  # free this implementation's tensors before the next one
    return rows


def _measure(row: Row, problem: ProfileProblem, qkv, step: str, say: Progress, **timing) -> torch.Tensor | None:
    """Fill ``row`` with the timings of one implementation; its output (heads-last), or None."""
    try:
        prepared = IMPLEMENTATIONS[row.impl].prepare(problem, qkv, timing["backward"])
        row.label = prepared.label
        say(f"{step} {row.label}: {timing['warmup']} warm-up + up to {timing['iters']} timed iterations ...")
        samples = time_forward_backward(prepared.forward, prepared.leaves, device=problem.device, **timing)
    except Exception as exc:  # report and go on: a baseline failing must not hide the others
        row.status = "skipped" if isinstance(exc, Unavailable) else "failed"
        row.note = _one_line(exc)
        say(f"{step} {row.label}: {row.status}: {row.note}")
        return None
    row.forward_ms, row.backward_ms = samples.forward_median, samples.backward_median
    row.forward_samples, row.backward_samples = len(samples.forward_ms), len(samples.backward_ms)
    row.forward_min_ms, row.forward_max_ms = min(samples.forward_ms), max(samples.forward_ms)
    if samples.backward_ms:
        row.backward_min_ms, row.backward_max_ms = min(samples.backward_ms), max(samples.backward_ms)
    _memory(row, prepared, samples.output, problem.device, timing["backward"])
    bwd = f", backward {row.backward_ms:.2f} ms" if row.backward_ms is not None else ""
    say(f"      forward {row.forward_ms:.2f} ms{bwd} (median of {row.forward_samples})")
    return prepared.to_heads_last(samples.output)


def half_precision_note(problem: ProfileProblem, rows: list[Row], backward: bool = True) -> str | None:
    """On the CPU, a note when natten in float16/bfloat16 ran slower than it runs in float32 (timed
    here, briefly): the CPU kernels convert half inputs to float32 and compute in float32."""
    if torch.device(problem.device).type != "cpu" or problem.dtype not in (torch.float16, torch.bfloat16):
        return None
    half = next((r for r in rows if r.impl == "natten" and r.status == "ok"), None)
    if half is None or half.total_ms is None:
        return None
    fp32 = profile(
        replace(problem, dtype=torch.float32), ["natten"], backward=backward, iters=3, max_seconds=1.0, progress=None
    )[0]
    if fp32.status != "ok" or fp32.total_ms is None or fp32.total_ms >= half.total_ms:
        return None
    return (
        f"natten in {problem.dtype_name} took {half.total_ms:.1f} ms, {half.total_ms / fp32.total_ms:.1f}x its "
        f"{fp32.total_ms:.1f} ms in float32 here: the CPU kernels convert half inputs to float32 and compute in "
        "float32, so on the CPU half precision saves memory, not time"
    )


def _memory(row: Row, prepared, output: torch.Tensor, device: str, backward: bool) -> None:
    """Peak memory of one forward (as timed: recording autograd when the backward is timed) and of
    one forward + backward; measured after the timing, so warm-up allocations are not counted."""
    with torch.enable_grad() if backward else torch.inference_mode():
        row.forward_peak_bytes = peak_bytes(prepared.forward, device)
    if backward:
        grad = torch.randn_like(output)

        def step():
            with torch.enable_grad():
                out = prepared.forward()
            return torch.autograd.grad(out, prepared.leaves, grad.reshape(out.shape))

        row.fwd_bwd_peak_bytes = peak_bytes(step, device)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return _cpu_name() if dev.type == "cpu" else dev.type


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(device: str = "cpu") -> dict:
    """Versions, threads and device: printed beside every result."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "natten": _version("natten"),
        "natten_kernels": _version("natten_kernels"),
        "natten_legacy": _version("natten_legacy"),
        "threads": torch.get_num_threads(),
        "device": device,
        "device_name": device_name(device),
        "platform": platform.platform(),
    }
