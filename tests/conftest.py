import os

# The Triton interpreter must be on before any @triton.jit function is defined or launched: tests run Triton kernels
# on the CPU at small sizes. On a GPU machine set MRT_TEST_TRITON_GPU=1 to test the compiled Triton kernels instead.
if os.environ.get("MRT_TEST_TRITON_GPU", "0") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def _triton_interpreter_index_fix() -> None:
    """Triton 3.6's interpreter (the GPU image's Triton) makes a loaded scalar an int with int(array), which NumPy
    2.5 refuses for its 1-element arrays ("only 0-dimensional arrays can be converted"): every kernel with a loop
    bounded by a loaded value failed under the interpreter. Triton 3.7+ squeeze first; give 3.6 the same. Tests on
    the CPU only: compiled kernels never run the interpreter."""
    try:
        from triton.runtime import interpreter
    except Exception:  # no Triton, or a broken install: the Triton tests skip or fail on their own
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_index", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))
    patched.squeezes_index = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _triton_interpreter_index_fix()


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
