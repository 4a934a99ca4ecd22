"""Developer sessions: ``python3 -m nox -s <session> [-- args]``.

tests    build natten-kernels, install every package, run ``pytest tests`` (args go to pytest)
lint     ruff check
profile  the profiler demo: ``python -m natten.profiler`` (args go to the profiler)
bench    the CPU benchmark suite: ``python benchmarks/run.py --suite cpu`` (args go to it)
docs     run every ``python`` snippet of README.md and docs/*.md, check links, anchors, README commands
wheels   build the four wheels into dist/, then install them into a clean venv and run the README usage

torch is pinned and installed first; it is never a build requirement: natten-kernels is built with
``--no-build-isolation`` against the torch of the session. The compiled wheel is built once per
source tree and torch version and cached under ``.nox/.kernels-wheels/``, so sessions share one build
(``-R`` also reuses a session's venv and skips every install).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

TORCH = "torch==2.13.0"
# scikit-build-core + cmake + ninja build natten-kernels; hatchling and setuptools are the pure packages'
# build backends. All of them must be in the venv because builds run without isolation.
BUILD_TOOLS = ["scikit-build-core>=0.10", "cmake>=3.18", "ninja", "hatchling", "setuptools>=64"]
PURE_PACKAGES = ["./packages/natten", "./packages/natten-flops", "./packages/natten-legacy"]
TEST_DEPS = ["pytest", "hypothesis", "fvcore", "matplotlib", "triton==3.9.0"]  # triton: interpreted kernel tests


REPO = Path(__file__).resolve().parent
KERNELS = REPO / "packages" / "natten-kernels"
WHEEL_CACHE = REPO / ".nox" / ".kernels-wheels"
BUILD_MINUTES = "about 4 minutes on 2 cores"  # measured: 236 s for a clean build of natten-kernels


def _kernels_key() -> str:
    """Hash of natten-kernels' sources and the pinned torch: the cached wheel's key."""
    h = hashlib.sha256(TORCH.encode())
    for f in sorted(KERNELS.rglob("*")):
        rel = f.relative_to(KERNELS)
        if f.is_file() and not {"build", "__pycache__"} & set(rel.parts) and f.suffix != ".so":
            h.update(str(rel).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def kernels_wheel(session: nox.Session) -> Path | None:
    """The natten-kernels wheel of this source tree (built once, then taken from the cache); None
    when nox skips installs (``-R`` on an existing venv)."""
    folder = WHEEL_CACHE / _kernels_key()
    wheels = sorted(folder.glob("natten_kernels-*.whl"))
    if wheels:
        session.log(f"natten-kernels: cached wheel {wheels[0].name} ({folder.name})")
        return wheels[0]
    session.log(f"natten-kernels: building the C++ kernels ({BUILD_MINUTES}; ninja prints [n/N] progress)")
    start = time.perf_counter()
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    args = ("python", "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps", "-w", str(tmp), str(KERNELS))
    session.run_install(*args)
    if not tmp.exists():  # skipped (-R): the reused venv already holds the kernels
        return None
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    session.log(f"natten-kernels: built in {time.perf_counter() - start:.0f} s")
    return sorted(folder.glob("natten_kernels-*.whl"))[0]


def install_natten(session: nox.Session, *extra: str) -> None:
    """torch (pinned), build tools and ``extra`` requirements, then the four packages without deps
    (so nothing can replace the pinned torch); the kernels from the cached wheel."""
    session.install(TORCH, "numpy")  # numpy: torch warns at import without it
    session.install(*BUILD_TOOLS, *extra)
    wheel = kernels_wheel(session)
    if wheel is not None:
        session.install("--no-deps", "--force-reinstall", str(wheel))
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
def wheels(session: nox.Session) -> None:
    """dist/: the natten-kernels platform wheel and the three pure wheels (one version), then a clean
    venv with only torch installs them as the README says and runs the README's usage."""
    session.install(TORCH, "numpy")
    session.install(*BUILD_TOOLS)
    dist = REPO / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    wheel = kernels_wheel(session)
    if wheel is None:
        session.error("wheels: run without -R (it skips the build)")
    shutil.copy(wheel, dist)
    session.run("python", "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(dist), *PURE_PACKAGES)
    session.log("wheels: " + ", ".join(sorted(p.name for p in dist.glob("*.whl"))))
    session.notify("wheels_install")


@nox.session(name="wheels_install")
def wheels_install(session: nox.Session) -> None:
    """A clean venv with only torch, then exactly the README's install from dist/ and its usage."""
    session.install(TORCH, "numpy")
    session.install("--find-links", str(REPO / "dist"), "natten[flops,legacy]")
    session.run("python", "-m", "natten.info")
    session.run("python", str(REPO / "docs" / "check_docs.py"), "--only", "README.md")


@nox.session
def docs(session: nox.Session) -> None:
    install_natten(session, "fvcore")
    session.run("python", "docs/check_docs.py", *session.posargs)
