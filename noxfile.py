"""Developer sessions: ``python3 -m nox -s <session> [-- args]``.

tests    build natten-kernels, install every package, run ``pytest tests`` (args go to pytest)
lint     ruff check
profile  the profiler demo: ``python -m natten.profiler`` (args go to the profiler)
bench    the CPU benchmark suite: ``python benchmarks/run.py --suite cpu`` (args go to it)
docs     run every ``python`` snippet of README.md and docs/*.md

torch is pinned and installed first; it is never a build requirement: natten-kernels is built with
``--no-build-isolation`` against the torch of the session.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

TORCH = "torch==2.13.0"
# scikit-build-core + cmake + ninja build natten-kernels; hatchling and setuptools are the pure packages'
# build backends. All of them must be in the venv because builds run without isolation.
BUILD_TOOLS = ["scikit-build-core>=0.10", "cmake>=3.18", "ninja", "hatchling", "setuptools>=64"]
PURE_PACKAGES = ["./packages/natten", "./packages/natten-flops", "./packages/natten-legacy"]
TEST_DEPS = ["pytest", "hypothesis", "fvcore", "triton==3.9.0"]  # triton: interpreted kernel tests


def install_natten(session: nox.Session, *extra: str) -> None:
    """torch (pinned), build tools and ``extra`` requirements, then the four packages without deps
    (so nothing can replace the pinned torch)."""
    session.install(TORCH, "numpy")  # numpy: torch warns at import without it
    session.install(*BUILD_TOOLS, *extra)
    session.install("--no-build-isolation", "--no-deps", "./packages/natten-kernels")
    session.install("--no-build-isolation", "--no-deps", *PURE_PACKAGES)


@nox.session
def tests(session: nox.Session) -> None:
    install_natten(session, *TEST_DEPS)
    # Any non-zero pytest status fails the session, including 5 (no tests collected).
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def profile(session: nox.Session) -> None:
    install_natten(session)
    session.run("python", "-m", "natten.profiler", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    install_natten(session, "fvcore")
    session.run("python", "benchmarks/run.py", "--suite", "cpu", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    install_natten(session, "fvcore")
    session.run("python", "docs/check_docs.py", *session.posargs)
