"""Loads the compiled kernel library, which defines the ``torch.ops.natten`` namespace."""

from __future__ import annotations

from pathlib import Path

import torch

_LIBRARY_NAME = "libnatten_kernels.so"
_load_error: str | None = None
_loaded = False


def check_torch() -> None:
    """Raise ``ImportError`` when the compiled library was built against another torch than the one
    imported (a C++ extension is tied to one torch release). A source checkout without a build has no
    record and is not checked."""
    try:
        from natten_kernels._build_info import TORCH_VERSION
    except ImportError:
        return
    if torch.__version__ != TORCH_VERSION:
        raise ImportError(
            f"natten-kernels was built against torch {TORCH_VERSION}, but torch {torch.__version__} is "
            f"installed. Install torch=={TORCH_VERSION.split('+')[0]}, or rebuild natten-kernels against this "
            "torch: pip install --no-build-isolation --no-deps --force-reinstall natten-kernels (from a checkout: "
            "./packages/natten-kernels instead of natten-kernels)."
        )


check_torch()


def load() -> bool:
    """Load the shared library once; remember why it failed instead of raising at import."""
    global _loaded, _load_error
    if _loaded or _load_error is not None:
        return _loaded
    path = Path(__file__).with_name(_LIBRARY_NAME)
    if not path.exists():
        _load_error = f"{path} is missing: natten-kernels was installed without its compiled library"
        return False
    try:
        torch.ops.load_library(str(path))
    except OSError as exc:  # ABI mismatch with the installed torch, missing symbols, ...
        _load_error = f"loading {path.name} failed: {exc}"
        return False
    _loaded = True
    return True


def load_error() -> str | None:
    """Why the library is unusable, or None when it loaded."""
    load()
    return _load_error


def library_path() -> Path:
    return Path(__file__).with_name(_LIBRARY_NAME)
