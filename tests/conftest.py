import os
from pathlib import Path

import pytest
import torch

import natten
from natten import context

EXTENDED = os.environ.get("NATTEN_EXTENDED_TESTS", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if EXTENDED:
        return
    skip = pytest.mark.skip(reason="extended tier: set NATTEN_EXTENDED_TESTS=1")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from default natten settings, a fixed seed and non-deterministic torch."""
    context.reset()
    torch.manual_seed(0)
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(det)
    context.reset()


@pytest.fixture
def poisoned():
    """Deterministic mode makes torch.empty fill float outputs with NaN: an unwritten element shows."""
    import torch.utils.deterministic

    torch.use_deterministic_algorithms(True)
    old = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = old


@pytest.fixture(scope="module")
def interpreted(request):
    """The test module's ``run_all()`` results, run in an interpreter process (tests/interpret.py)."""
    from interpret import run_interpreted

    return run_interpreted(Path(request.module.__file__).stem)


__all__ = ["natten"]
