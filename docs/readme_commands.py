"""Run the README's shell commands as a user would (called by .ci/run): each ```bash block of
README.md in a fresh virtual environment, from the repository root, line by line, stopping at the
first failure. Blocks marked ``<!-- ci: .ci/run -->`` (the quick start) are left to .ci/run, which
runs them verbatim (``docs/check_docs.py`` checks that)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_docs import REPO, bash_blocks


def main() -> int:
    blocks = [lines for marked, lines in bash_blocks(REPO / "README.md") if not marked]
    for n, lines in enumerate(blocks, 1):
        with tempfile.TemporaryDirectory(prefix="natten-readme-") as tmp:
            venv.create(tmp, with_pip=True)
            env = dict(os.environ, VIRTUAL_ENV=tmp, PATH=f"{tmp}/bin:{os.environ['PATH']}")
            env.pop("PYTHONPATH", None)
            for line in lines:
                print(f"[README block {n}/{len(blocks)}] $ {line}", flush=True)
                start = time.perf_counter()
                done = subprocess.run(["bash", "-c", line], cwd=REPO, env=env)
                if done.returncode:
                    print(f"README block {n}: `{line}` failed with status {done.returncode}", file=sys.stderr)
                    return 1
                print(f"    ok in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"README: {sum(map(len, blocks))} commands in {len(blocks)} blocks ran in fresh venvs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
