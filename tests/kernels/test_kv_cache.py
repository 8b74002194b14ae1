"""store_kv and copy_blocks: every backend against the reference (exact: they move bits), and the reference against
an explicit per-slot loop. Random slots and blocks, odd head dims, strided keys, bad input."""
import pytest
import torch

from mrt_kernels import BackendError
from mrt_kernels._backend import available_backends
from mrt_kernels.kv_cache import copy_blocks, copy_blocks_ref, store_kv, store_kv_ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _backends(device):
    return available_backends(device, cpp_op="store_kv", cuda_op="store_kv", triton_ok=True)


def _devices():
    # The CUDA cases carry the gpu marker: benchmarks/gpu_check.sh runs `pytest -m gpu`; elsewhere they skip.
    return ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _assert_same(got, want, what):
    if torch.equal(got, want):
        return
    diff = (got != want)
    idx = diff.nonzero()[:5].tolist()
    raise AssertionError(f"{what}: {int(diff.sum())} of {diff.numel()} elements differ, first at {idx}")


def _random(shape, dtype, device):
    return torch.randn(shape, dtype=torch.float32, device=device).to(dtype)


def _store_case(num_blocks, block_size, heads, dim, n, dtype, device, strided):
    k_cache = _random((num_blocks, block_size, heads, dim), dtype, device)
    v_cache = _random((num_blocks, block_size, heads, dim), dtype, device)
    if strided:  # keys and values as views of a fused (N, 3 * Hkv, D) projection: token stride 3 * Hkv * D
        qkv = _random((n, 3 * heads, dim), dtype, device)
        key, value = qkv[:, heads:2 * heads], qkv[:, 2 * heads:]
    else:
        key, value = _random((n, heads, dim), dtype, device), _random((n, heads, dim), dtype, device)
    slots = torch.randperm(num_blocks * block_size, device=device)[:n]   # distinct, scattered over all blocks
    return key, value, k_cache, v_cache, slots


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_kv_reference_is_the_definition(seed, dtype):
    key, value, k_cache, v_cache, slots = _store_case(5, 3, 2, 7, 9, dtype, "cpu", strided=True)
    k_want, v_want = k_cache.clone(), v_cache.clone()
    for n, s in enumerate(slots.tolist()):
        k_want[s // 3, s % 3] = key[n]
        v_want[s // 3, s % 3] = value[n]
    store_kv_ref(key, value, k_cache, v_cache, slots)
    _assert_same(k_cache, k_want, "k_cache")
    _assert_same(v_cache, v_want, "v_cache")


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 16, 2, 64, 37, False), (4, 5, 3, 5, 13, True), (3, 1, 1, 24, 3, True),
                                   (2, 16, 4, 8, 1, False)])
def test_store_kv_backends(seed, device, dtype, shape):
    num_blocks, block_size, heads, dim, n, strided = shape
    key, value, k_cache, v_cache, slots = _store_case(num_blocks, block_size, heads, dim, n, dtype, device, strided)
    k_want, v_want = k_cache.clone(), v_cache.clone()
    store_kv_ref(key, value, k_want, v_want, slots)
    backends = _backends(torch.device(device))
    want = {"reference", "triton", "cpp"} if device == "cpu" else {"reference", "triton", "cuda"}
    assert want <= set(backends), backends
    for backend in backends:
        k_got, v_got = k_cache.clone(), v_cache.clone()
        store_kv(key, value, k_got, v_got, slots, backend=backend)
        _assert_same(k_got, k_want, f"{backend} k_cache")
        _assert_same(v_got, v_want, f"{backend} v_cache")


def test_store_kv_no_tokens(seed):
    k_cache, v_cache = torch.zeros(2, 4, 1, 8), torch.zeros(2, 4, 1, 8)
    empty = torch.empty(0, 1, 8)
    for backend in _backends(torch.device("cpu")):
        store_kv(empty, empty, k_cache, v_cache, torch.empty(0, dtype=torch.int64), backend=backend)
    assert not k_cache.any() and not v_cache.any()


def _copy_case(layers, num_blocks, block_size, heads, dim, pairs, dtype, device):
    kv_cache = _random((layers, 2, num_blocks, block_size, heads, dim), dtype, device)
    perm = torch.randperm(num_blocks)
    dst = perm[:pairs]                                             # distinct
    src = perm[pairs:][torch.randint(0, num_blocks - pairs, (pairs,))]   # disjoint from dst, may repeat
    return kv_cache, src, dst


def test_copy_blocks_reference_is_the_definition(seed):
    kv_cache, src, dst = _copy_case(2, 7, 3, 2, 5, 3, torch.float32, "cpu")
    want = kv_cache.clone()
    for s, d in zip(src.tolist(), dst.tolist()):
        for layer in range(2):
            for plane in range(2):
                want[layer, plane, d] = kv_cache[layer, plane, s]
    copy_blocks_ref(kv_cache, src, dst)
    _assert_same(kv_cache, want, "kv_cache")


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 9, 16, 2, 64, 4), (1, 5, 5, 3, 5, 2), (2, 4, 1, 1, 24, 1), (2, 3, 2, 2, 8, 0)])
def test_copy_blocks_backends(seed, device, dtype, shape):
    layers, num_blocks, block_size, heads, dim, pairs = shape
    kv_cache, src, dst = _copy_case(layers, num_blocks, block_size, heads, dim, pairs, dtype, device)
    want = kv_cache.clone()
    copy_blocks_ref(want, src.to(device), dst.to(device))
    for backend in _backends(torch.device(device)):
        got = kv_cache.clone()
        copy_blocks(got, src, dst, backend=backend)        # indices on the CPU: moved to the cache's device
        _assert_same(got, want, f"{backend} kv_cache")
        got = kv_cache.clone()
        copy_blocks(got, src.tolist(), dst.tolist(), backend=backend)
        _assert_same(got, want, f"{backend} kv_cache (list indices)")


def _good_store():
    return _store_case(4, 4, 2, 8, 5, torch.float32, "cpu", strided=False)


@pytest.mark.parametrize("bad, name", [
    (lambda a: a.update(key=a["key"][0]), "key"),
    (lambda a: a.update(value=a["value"][:, :1]), "value"),
    (lambda a: a.update(k_cache=a["k_cache"][..., :4]), "k_cache"),
    (lambda a: a.update(v_cache=a["v_cache"][:2]), "v_cache"),
    (lambda a: a.update(value=a["value"].double()), "value"),
    (lambda a: a.update(slot_mapping=a["slot_mapping"].int()), "slot_mapping"),
    (lambda a: a.update(slot_mapping=a["slot_mapping"][:3]), "slot_mapping"),
    (lambda a: a["slot_mapping"].__setitem__(2, 16), "slot_mapping"),
    (lambda a: a["slot_mapping"].__setitem__(0, -1), "slot_mapping"),
    (lambda a: a.update(k_cache=a["k_cache"].transpose(0, 1)), "k_cache"),
])
def test_store_kv_bad_input(bad, name):
    key, value, k_cache, v_cache, slots = _good_store()
    args = dict(key=key, value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slots)
    bad(args)
    with pytest.raises(ValueError, match=name):
        store_kv(**args)


@pytest.mark.parametrize("src, dst, name", [
    ([0, 1], [2], "src"), ([0], [9], "dst"), ([-1], [2], "src"), ([0, 1], [2, 2], "dst"), ([0, 1], [1, 2], "dst"),
    (torch.tensor([0], dtype=torch.int32), [2], "src"),
])
def test_copy_blocks_bad_input(src, dst, name):
    kv_cache = torch.zeros(1, 2, 4, 2, 1, 4)
    with pytest.raises(ValueError, match=name):
        copy_blocks(kv_cache, src, dst)
    with pytest.raises(ValueError, match="kv_cache"):
        copy_blocks(kv_cache[:, 0], [0], [1])


def test_forcing_a_missing_backend_raises():
    key, value, k_cache, v_cache, slots = _good_store()
    with pytest.raises(BackendError):
        store_kv(key, value, k_cache, v_cache, slots, backend="cuda")
    with pytest.raises(BackendError):
        copy_blocks(torch.zeros(1, 2, 4, 2, 1, 4), [0], [1], backend="cuda")
