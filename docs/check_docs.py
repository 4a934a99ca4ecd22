"""Checks that the docs match the code (``python3 -m nox -s docs``).

1. Every ```python block of README.md and docs/*.md runs. The blocks of one file share a namespace
   and run in order; a block right after a ``<!-- no-run -->`` line is skipped.
2. docs/environment.md lists exactly the ``NATTEN_*`` environment variables that the code reads.
3. Every relative link of README.md, docs/*.md and packages/*/README.md points to a file of the
   repository, and every ``#anchor`` to a heading of its target; no page refers to files outside
   the repository (the design notes the product was specified from are not shipped).
4. Every shell command of README.md is run by CI: ``docs/readme_commands.py`` (called by .ci/run)
   runs each ```bash block in a fresh venv, except blocks marked ``<!-- ci: .ci/run -->``, whose
   commands must appear verbatim in .ci/run.

``--only FILE`` runs the snippets of one file and skips the other checks.
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


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
OUTSIDE = re.compile(r"design\.md|design §|\.\./shared")
CI_MARK = "<!-- ci: .ci/run -->"


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids of a markdown file (lowercase, punctuation dropped, spaces to hyphens,
    repeated headings numbered)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def check_links(files: list[Path]) -> list[str]:
    errors = []
    for path in files:
        text = FENCE.sub("", path.read_text())
        where = path.relative_to(REPO)
        for line in text.splitlines():
            if OUTSIDE.search(line):
                errors.append(f"{where}: refers to a file outside the repository: {line.strip()[:100]}")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if REPO not in dest.parents and dest != REPO:
                errors.append(f"{where}: link {target} leaves the repository")
            elif not dest.exists():
                errors.append(f"{where}: link {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                errors.append(f"{where}: link {target}: no heading with id #{anchor} in {dest.relative_to(REPO)}")
    return errors


def bash_blocks(path: Path) -> list[tuple[bool, list[str]]]:
    """(marked to run from .ci/run, command lines) of each ```bash block."""
    text = path.read_text()
    out = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        lines = [ln.split(" #")[0].strip() for ln in match.group(1).splitlines()]
        out.append((before == CI_MARK, [ln for ln in lines if ln and not ln.startswith("#")]))
    return out


def check_readme_commands() -> list[str]:
    ci = (REPO / ".ci" / "run").read_text()
    errors = []
    if "docs/readme_commands.py" not in ci:
        errors.append(".ci/run does not run docs/readme_commands.py (the README's shell commands)")
    for marked, lines in bash_blocks(REPO / "README.md"):
        for line in lines if marked else ():
            if line not in ci:
                errors.append(f"README.md: `{line}` is marked as run by .ci/run, which does not run it")
    return errors


def main() -> int:
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args else None
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    if only:
        files = [REPO / only]
    total, errors = 0, []
    start = time.perf_counter()
    for path in files:
        ran, errs = run_snippets(path)
        total += ran
        errors += errs
    if not only:
        errors += check_environment_table()
        errors += check_links(files + sorted(REPO.glob("packages/*/README.md")))
        errors += check_readme_commands()
    for e in errors:
        print(e, file=sys.stderr)
    checked = "" if only else "; environment table, links, anchors and README commands checked"
    print(f"{total} snippets from {len(files)} files in {time.perf_counter() - start:.1f} s{checked}; "
          f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
