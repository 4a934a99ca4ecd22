"""Peak memory of one call, over what was allocated before it.

CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``). CPU (Linux): the process's
resident-set high-water mark (``VmHWM``), reset before the call through ``/proc/self/clear_refs``,
after ``malloc_trim`` has returned freed heap pages to the system (otherwise a call that reuses pages
an earlier one freed would look free). Elsewhere: ``None`` (shown as ``-``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Callable
from pathlib import Path

import torch

from natten.profiler.timing import synchronize

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_cpu_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Bytes the call ``fn()`` needed at its peak beyond what was allocated before it (its result and
    anything it keeps alive included), or None where this platform cannot tell."""
    dev = torch.device(device)
    gc.collect()
    if dev.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        result = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(dev) - before
        del result
        return max(peak, 0)
    if dev.type != "cpu":
        return None
    _trim()
    if not _reset_cpu_peak():
        return None
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    if before is None or peak is None:
        return None
    return max(peak - before, 0) * 1024
