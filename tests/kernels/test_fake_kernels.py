"""The fake kernels of mrt_kernels/_fake_kernels.py: every op mrt_kernels registers with the dispatcher has one (so a
new op cannot escape torch.compile), and the ops without a test of their own elsewhere pass torch.library.opcheck."""
import pytest
import torch

import mrt_kernels  # noqa: F401  (registers the ops and their fakes)
from mrt_kernels import _fake_kernels
from mrt_kernels._backend import has_compiled_kernel


def test_every_dispatcher_op_has_a_fake():
    ops = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("mrt_kernels::")}
    ops.discard("build_info")  # returns a string: nothing to trace
    assert ops, "mrt_kernels registered no ops"
    assert ops <= set(_fake_kernels.COMPILED) | set(_fake_kernels.PYTHON)
    assert set(_fake_kernels.PYTHON) <= ops  # the Triton custom ops are there without the extension too


@pytest.mark.skipif(not has_compiled_kernel("store_kv", "CPU"), reason="mrt_kernels._C has no store_kv CPU kernel")
def test_kv_cache_ops_opcheck():
    key, value = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    k_cache, v_cache = torch.zeros(4, 2, 2, 8), torch.zeros(4, 2, 2, 8)
    torch.library.opcheck(torch.ops.mrt_kernels.store_kv.default,
                          (key, value, k_cache, v_cache, torch.tensor([5, 0, 2])))
    kv_cache = torch.randn(2, 2, 4, 2, 2, 8)
    torch.library.opcheck(torch.ops.mrt_kernels.copy_blocks.default,
                          (kv_cache, torch.tensor([0, 0]), torch.tensor([1, 3])))
