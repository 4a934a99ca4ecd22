"""Peak CPU memory of one forward + backward, measured in a fresh process (run by ``peak_memory``).

Method ("rss-hwm"): build the inputs, run one warm-up forward + backward (thread pools, lazy
initialization), free it, read ``VmRSS``, reset the peak with ``/proc/self/clear_refs`` (Linux >= 4.0),
run one forward + backward, and report ``VmHWM - VmRSS``: the largest amount of memory the pass
held at once on top of its inputs, whoever allocated it (torch or the kernels). glibc's mmap
threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors go back to the OS instead of
being reused silently from the heap, which would hide them from RSS.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

METHOD = "rss-hwm: fresh subprocess, VmHWM - VmRSS around one fwd+bwd after a warm-up (/proc/self/clear_refs)"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _probe(impl: str, problem_json: str) -> dict:
    import torch

    from natten.profiler import IMPLEMENTATIONS, ProfileProblem

    spec = json.loads(problem_json)
    spec["dtype"] = getattr(torch, spec["dtype"])
    problem = ProfileProblem.create(**spec)
    prepared = IMPLEMENTATIONS[impl].prepare(problem, problem.inputs(requires_grad=False), True)
    grad_out = None

    def step():
        nonlocal grad_out
        out = prepared.forward()
        if grad_out is None:
            grad_out = torch.randn_like(out)
        torch.autograd.grad(out, prepared.leaves, grad_out)

    step()
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step()
    peak = _status_kib("VmHWM")
    return {"peak_bytes": (peak - before) * 1024, "rss_before_bytes": before * 1024, "method": METHOD}


def peak_memory(impl: str, spec: dict) -> dict:
    """Run the probe for ``impl`` on the problem ``spec`` (ProfileProblem.create keywords, dtype as a name)."""
    if not Path("/proc/self/clear_refs").exists():
        return {"peak_bytes": None, "method": METHOD, "note": "needs Linux /proc (clear_refs)"}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, __file__, impl, json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"peak_bytes": None, "method": METHOD, "note": f"probe failed: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2])))
