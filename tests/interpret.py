"""Run a test module's ``run_all()`` in a fresh interpreter with ``TRITON_INTERPRET=1``.

The interpreter must be on before triton is first imported, and importing torch / natten in the test
process may already have imported it; so the kernels run in a child process, which reports
``{name: None if passed, else the failure text}`` as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path


def run_interpreted(module: str, timeout: float = 1200) -> dict:
    here = Path(__file__).resolve().parent
    code = (
        f"import json, sys; sys.path[:0] = [{str(here)!r}]\n"
        f"import {module} as t\n"
        "print('@@' + json.dumps(t.run_all()))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    assert proc.returncode == 0 and lines, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][2:])


def run_checks(checks) -> dict:
    """Call each ``(name, check)`` with outputs poisoned (deterministic mode fills ``torch.empty`` with
    NaN: an element a kernel does not write fails); {name: None if it passed, else the failure text}."""
    import torch
    import torch.utils.deterministic

    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    results = {}
    for name, check in checks:
        try:
            check()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
    return results
