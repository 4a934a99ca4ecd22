"""Checks that the docs match the code (``python3 -m nox -s docs``).

1. Every ```python block of README.md and docs/*.md runs. The blocks of one file share a namespace
   and run in order; a block right after a ``<!-- no-run -->`` line is skipped.
2. docs/environment.md lists exactly the ``NATTEN_*`` environment variables that the code reads.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
ENV_READ = re.compile(r"""(?:getenv|environ(?:\.get)?)\s*[(\[]\s*["'](NATTEN_\w+)["']""")
CODE = ("packages/*/src/**/*.py", "packages/*/csrc/**/*.cpp", "packages/*/csrc/**/*.h", "tests/**/*.py",
        "benchmarks/*.py", "noxfile.py")


def run_snippets(path: Path) -> tuple[int, list[str]]:
    text = path.read_text()
    namespace: dict = {"__name__": f"snippets:{path.name}"}
    ran, errors = 0, []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == "<!-- no-run -->":
            continue
        try:
            exec(compile(match.group(1), f"{path.relative_to(REPO)}:{line}", "exec"), namespace)
        except Exception as exc:  # report every failing block, not just the first
            errors.append(f"{path.relative_to(REPO)}:{line}: {type(exc).__name__}: {exc}")
        ran += 1
    return ran, errors


def check_environment_table() -> list[str]:
    read = set()
    for pattern in CODE:
        for f in REPO.glob(pattern):
            if "build" not in f.parts and ".nox" not in f.parts:
                read |= set(ENV_READ.findall(f.read_text(errors="replace")))
    table = (REPO / "docs" / "environment.md").read_text()
    documented = set(re.findall(r"^\|\s*`(NATTEN_\w+)`", table, re.M))
    errors = [f"docs/environment.md: {v} is read by the code but not documented" for v in sorted(read - documented)]
    errors += [f"docs/environment.md: {v} is documented but no code reads it" for v in sorted(documented - read)]
    return errors


def main() -> int:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    total, errors = 0, []
    start = time.perf_counter()
    for path in files:
        ran, errs = run_snippets(path)
        total += ran
        errors += errs
    errors += check_environment_table()
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{total} snippets from {len(files)} files in {time.perf_counter() - start:.1f} s; "
          f"environment table checked; {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
