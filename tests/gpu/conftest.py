import natten_kernels.triton.standalone as _standalone

# Without the compiled C++ library (e.g. it failed to build on the GPU machine), define the op schemas
# from Python so the Triton path still runs; a no-op when the library loaded.
_standalone.ensure_ops()


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _release_cuda_cache():
    """xdist workers share one GPU: give cached blocks back after every test, so that one worker's
    large problem (the sampled references of S1-S7) cannot starve another's (the 2^31-element tests)."""
    yield
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
