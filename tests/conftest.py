import os

# The Triton interpreter must be on before any @triton.jit function is defined or launched: tests run Triton kernels
# on the CPU at small sizes. On a GPU machine set MRT_TEST_TRITON_GPU=1 to test the compiled Triton kernels instead.
if os.environ.get("MRT_TEST_TRITON_GPU", "0") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed():
    """A fresh seed per test run (printed on failure through the test id's output), so inputs are new each run."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    print(f"seed={s}")
    return s
