"""fused_linear_logprobs on a device with no fused kernel falls back to the reference: once, loudly, naming the fix."""
import importlib
import warnings

import pytest
import torch

from mrt_kernels import fused_linear_logprobs as _public

# The package exports the function under the module's own name: take the module itself.
flp = importlib.import_module("mrt_kernels.fused_linear_logprobs")


@pytest.fixture(autouse=True)
def fresh_warning_state(monkeypatch):
    monkeypatch.setattr(flp, "_WARNED_FALLBACK", set())
    monkeypatch.delenv("MRT_KERNELS_BACKEND", raising=False)


def _meta_inputs(n=0, v=151936, d=8):
    # The meta device has no kernel of the op (like a GPU without Triton or the CUDA build), and runs the reference
    # by shapes alone; n = 0 keeps the argument checks from reading values.
    return (torch.empty(n, d, device="meta"), torch.empty(v, d, device="meta"),
            torch.empty(n, dtype=torch.int64, device="meta"))


def test_gpu_fallback_warns_once_with_the_fix():
    with pytest.warns(RuntimeWarning) as rec:
        assert flp._warn_reference_fallback(torch.device("cuda"), 32768, 151936)
    msg = str(rec[0].message)
    assert "MATERIALISES the (32768, 151936) logits: 37.1 GiB" in msg and "pip install triton" in msg
    assert "MRT_KERNELS_BACKEND=reference" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not flp._warn_reference_fallback(torch.device("cuda"), 32768, 151936)   # once only


def test_public_op_warns_on_a_device_without_kernels():
    with pytest.warns(RuntimeWarning, match="falls back to the plain-PyTorch reference"):
        _public(*_meta_inputs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _public(*_meta_inputs())


def test_no_warning_on_the_cpu_or_when_the_reference_is_asked_for(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not flp._warn_reference_fallback(torch.device("cpu"), 10, 10)
        _public(*_meta_inputs(), backend="reference")
        monkeypatch.setenv("MRT_KERNELS_BACKEND", "reference")
        _public(*_meta_inputs())
