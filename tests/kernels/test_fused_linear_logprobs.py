"""fused_linear_logprobs: every backend against the float64 reference, forward, entropy and both gradients.

Tolerance (docs/testing.md): a backend's max error against float64 may be at most twice the error of eager PyTorch
run in the input dtype (`log_softmax((h @ W.T).float() / T)`, the matmul in that dtype) plus a small floor of fp32
rounding.
"""
import importlib

import pytest
import torch

from mrt_kernels import _backend
from mrt_kernels._backend import BackendError
from mrt_kernels.fused_linear_logprobs import fused_linear_logprobs, fused_linear_logprobs_ref

# The module, not the function that mrt_kernels re-exports under the same name.
flp_mod = importlib.import_module("mrt_kernels.fused_linear_logprobs")
KW = dict(cpp_op="fused_linear_logprobs_fwd", triton_ok=True)
CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def _backends_here(device):
    return [b for b in ("cpp", "triton", "reference") if _backend.unavailable_reason(b, device, **KW) is None]


def _make(n, v, d, dtype, device, ignore_frac=0.2, ignore_index=-100):
    # hidden scaled so the logits spread over ~+-10: softmax neither flat nor one-hot.
    h = (torch.randn(n, d, dtype=torch.float64) * 3 / d ** 0.25).to(dtype).to(device)
    w = (torch.randn(v, d, dtype=torch.float64) / d ** 0.25).to(dtype).to(device)
    t = torch.randint(0, v, (n,), device=device)
    t[torch.rand(n, device=device) < ignore_frac] = ignore_index
    g = torch.randn(n, dtype=torch.float32, device=device)  # upstream gradient of logp
    return h, w, t, g


def _run(fn, h, w, t, g, need_h=True, need_w=True):
    h = h.detach().clone().requires_grad_(need_h)
    w = w.detach().clone().requires_grad_(need_w)
    logp, ent = fn(h, w, t)
    (logp * g.to(logp.dtype)).sum().backward()
    return {"logp": logp.detach(), "entropy": ent.detach(), "grad_h": h.grad, "grad_w": w.grad}


def _eager(h, w, t, temperature, ignore_index):
    """What a trainer writes without the op: the matmul in the input dtype, log_softmax in fp32."""
    def fn(h, w, t):
        lp = torch.log_softmax((h @ w.T).float() / temperature, dim=-1)
        valid = t != ignore_index
        logp = torch.where(valid, lp.gather(1, torch.where(valid, t, 0)[:, None]).squeeze(1), 0.0)
        ent = torch.where(valid, -(lp.exp() * lp).sum(-1), 0.0).detach()
        return logp, ent
    return fn


def _assert_close(name, got, ref, eager, backend):
    got, ref, eager = got.double().cpu(), ref.double().cpu(), eager.double().cpu()
    err = (got - ref).abs()
    eager_err = (eager - ref).abs().max().item()
    floor = 64 * torch.finfo(torch.float32).eps * max(1.0, ref.abs().max().item())
    tol = 2 * eager_err + floor
    if err.max().item() > tol or not torch.isfinite(got).all():
        idx = torch.nonzero(err > tol)[:5].tolist()
        where = [(i, got[tuple(i)].item(), ref[tuple(i)].item()) for i in idx]
        raise AssertionError(f"{backend} {name}: max error {err.max().item():.3e} > tol {tol:.3e} (eager error "
                             f"{eager_err:.3e}); first mismatches (index, got, ref): {where}")


def _check(backend, device, dtype, n, v, d, *, temperature=1.0, chunk_size=None, vocab_tile=None, monkeypatch=None,
           need_h=True, need_w=True, ignore_index=-100):
    if vocab_tile is not None:
        monkeypatch.setitem(flp_mod.VOCAB_TILE, device.type, vocab_tile)
    h, w, t, g = _make(n, v, d, dtype, device, ignore_index=ignore_index)
    ref = _run(lambda h, w, t: fused_linear_logprobs_ref(h, w, t, temperature=temperature, ignore_index=ignore_index,
                                                         return_entropy=True),
               h.double(), w.double(), t, g, need_h, need_w)
    eager = _run(_eager(h, w, t, temperature, ignore_index), h, w, t, g, need_h, need_w)
    got = _run(lambda h, w, t: fused_linear_logprobs(h, w, t, temperature=temperature, ignore_index=ignore_index,
                                                     return_entropy=True, chunk_size=chunk_size, backend=backend),
               h, w, t, g, need_h, need_w)
    assert got["logp"].dtype == torch.float32 and got["logp"].shape == (n,)
    assert got["entropy"].dtype == torch.float32 and not got["entropy"].requires_grad
    for name in ("logp", "entropy", "grad_h", "grad_w"):
        if ref[name] is None:
            assert got[name] is None, f"{name} should get no gradient"
            continue
        if name.startswith("grad"):
            assert got[name].dtype == dtype, f"{name} dtype {got[name].dtype}"
        _assert_close(name, got[name], ref[name], eager[name], backend)
    ignored = (t == ignore_index).cpu()
    assert (got["logp"].cpu()[ignored] == 0).all() and (got["entropy"].cpu()[ignored] == 0).all()
    if need_h:
        assert (got["grad_h"].cpu()[ignored] == 0).all(), "ignored rows must get no gradient"


# (n, v, d, temperature, chunk_size, vocab_tile): one token; the odd vocabulary 32,003 with d not a multiple of 16;
# several token chunks and vocabulary tiles with ragged last ones.
SHAPES = {
    "one-token": (1, 7, 5, 1.0, None, None),
    "v32003": (37, 32003, 20, 0.7, None, None),
    "chunked": (70, 1000, 48, 1.3, 16, 300),
}
CPU_CASES = [(b, dt) for b in ("cpp", "reference") for dt in (torch.float32, torch.bfloat16, torch.float16)] + \
    [("triton", torch.float32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend,dtype", CPU_CASES, ids=lambda x: str(x).replace("torch.", ""))
def test_matches_reference_cpu(backend, dtype, shape, seed, monkeypatch):
    if backend not in _backends_here(CPU):
        pytest.skip(_backend.unavailable_reason(backend, CPU, **KW))
    n, v, d, temp, chunk, tile = SHAPES[shape]
    _check(backend, CPU, dtype, n, v, d, temperature=temp, chunk_size=chunk, vocab_tile=tile, monkeypatch=monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matches_reference_triton_gpu(dtype, shape, seed, monkeypatch):
    n, v, d, temp, chunk, tile = SHAPES[shape]
    _check("triton", CUDA, dtype, n, v, d, temperature=temp, chunk_size=chunk, vocab_tile=tile,
           monkeypatch=monkeypatch)


@pytest.mark.gpu
def test_matches_reference_triton_gpu_large(seed):
    _check("triton", CUDA, torch.bfloat16, 3000, 50257, 768, temperature=0.9, chunk_size=1024)


@pytest.mark.parametrize("need_h,need_w", [(True, False), (False, True)], ids=["frozen-weight", "frozen-hidden"])
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_one_gradient(backend, need_h, need_w, seed, monkeypatch):
    if backend not in _backends_here(CPU):
        pytest.skip(_backend.unavailable_reason(backend, CPU, **KW))
    _check(backend, CPU, torch.float32, 33, 500, 24, temperature=0.8, chunk_size=16, vocab_tile=128,
           monkeypatch=monkeypatch, need_h=need_h, need_w=need_w, ignore_index=7)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_all_ignored_and_no_grad(backend, seed):
    if backend not in _backends_here(CPU):
        pytest.skip(_backend.unavailable_reason(backend, CPU, **KW))
    h, w, t, _ = _make(9, 300, 12, torch.float32, CPU)
    with torch.no_grad():
        a, ea = fused_linear_logprobs(h, w, t, return_entropy=True, backend=backend)
    b = fused_linear_logprobs_ref(h, w, t)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(ea).all()
    t_all = torch.full_like(t, -100)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    logp = fused_linear_logprobs(hh, ww, t_all, backend=backend)
    logp.sum().backward()
    assert (logp == 0).all() and (hh.grad == 0).all() and (ww.grad == 0).all()


def test_default_backend_on_cpu():
    expected = "cpp" if "cpp" in _backends_here(CPU) else "reference"
    assert _backend.select_backend("fused_linear_logprobs", CPU, None, **KW) == expected


def test_forcing_a_missing_backend_raises(monkeypatch):
    h, w, t, _ = _make(3, 10, 4, torch.float32, CPU)
    with pytest.raises(BackendError, match="unknown backend"):
        fused_linear_logprobs(h, w, t, backend="nope")
    with pytest.raises(BackendError, match="cuda"):
        fused_linear_logprobs(h, w, t, backend="cuda")  # this op has no CUDA C++ backend
    monkeypatch.setenv("MRT_KERNELS_BACKEND", "reference")
    torch.testing.assert_close(fused_linear_logprobs(h, w, t), fused_linear_logprobs_ref(h, w, t))


def _bad_inputs():
    h, w, t = torch.randn(4, 6), torch.randn(10, 6), torch.tensor([1, 2, -100, 9])
    yield "hidden-1d", dict(hidden=h[0]), "hidden"
    yield "hidden-int", dict(hidden=h.long(), weight=w.long()), "hidden"
    yield "weight-dtype", dict(weight=w.double()), "weight"
    yield "weight-d", dict(weight=torch.randn(10, 5)), "weight"
    yield "targets-dtype", dict(targets=t.int()), "targets"
    yield "targets-len", dict(targets=t[:3]), "targets"
    yield "targets-high", dict(targets=torch.tensor([1, 2, 10, 0])), "targets"
    yield "targets-negative", dict(targets=torch.tensor([1, -1, 0, 0])), "targets"
    yield "temperature-zero", dict(temperature=0.0), "temperature"
    yield "temperature-negative", dict(temperature=-1.0), "temperature"
    yield "chunk-size", dict(chunk_size=0), "chunk_size"
    yield "mixed-devices", dict(weight=w.to("meta")), "device"


@pytest.mark.parametrize("case", list(_bad_inputs()), ids=lambda c: c[0])
def test_bad_input_raises(case):
    _, override, word = case
    args = dict(hidden=torch.randn(4, 6), weight=torch.randn(10, 6), targets=torch.tensor([1, 2, -100, 9]))
    args.update(override)
    with pytest.raises(ValueError, match=word):
        fused_linear_logprobs(**args)


@pytest.mark.skipif(not _backend.has_compiled_kernel("fused_linear_logprobs_fwd", "CPU"), reason="no cpp kernel")
def test_cpp_ops_registration():
    # Schema, fake (meta) implementation and dispatcher behaviour agree: what torch.compile relies on.
    h, w, t, g = _make(11, 70, 9, torch.float32, CPU)
    t = t.clamp(min=0)
    fwd = torch.ops.mrt_kernels.fused_linear_logprobs_fwd
    for flags in [(True, True), (False, False)]:
        torch.library.opcheck(fwd, (h, w, t, 0.9, -100, *flags, 4, 32))
    lse = fwd(h, w, t, 0.9, -100, False, False, 4, 32)[1]
    torch.library.opcheck(torch.ops.mrt_kernels.fused_linear_logprobs_bwd_weight, (g, h, w, t, lse, 0.9, -100, 4, 32))


def test_torch_compile(seed):
    # The autograd.Function over registered ops traces (fake tensors) and runs compiled; aot_eager skips codegen.
    backend = "cpp" if "cpp" in _backends_here(CPU) else "reference"
    h, w, t, g = _make(20, 300, 16, torch.float32, CPU)
    fn = torch.compile(lambda h, w, t: fused_linear_logprobs(h, w, t, temperature=0.9, backend=backend),
                       backend="aot_eager")
    got = _run(lambda h, w, t: (fn(h, w, t), torch.zeros(len(t))), h, w, t, g)
    ref = _run(lambda h, w, t: (fused_linear_logprobs_ref(h, w, t, temperature=0.9), torch.zeros(len(t))),
               h, w, t, g)
    for name in ("logp", "grad_h", "grad_w"):
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5, msg=name)
