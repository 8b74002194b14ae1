"""paged_attention: every available backend against dense causal attention in float64.

Each sequence's keys/values are made contiguous first (the truth is computed from those, with no paging), then
written into a cache whose other slots hold noise, through block tables drawn with torch.randperm (so blocks are
scattered in random order). Cases: decode, prefill without and with a cached prefix that ends inside a block, a
mixed batch, GQA / MHA / MQA, odd head dims, block sizes 1, 5, 16, 32; the split-KV path forced on the CPU.
Tolerance: a backend's max error <= 2 x the error of the eager reference run in the same dtype (both against the
float64 truth) + one machine epsilon of the dtype.
"""
import math

import pytest
import torch

from mrt_kernels import BackendError
from mrt_kernels._backend import has_compiled_kernel
from mrt_kernels.kv_cache import store_kv_ref
from mrt_kernels.paged_attention import _unavailable, paged_attention, paged_attention_ref

BACKENDS = ("reference", "sdpa", "cpp", "triton", "flash_attn")
HAS_CPP = has_compiled_kernel("paged_attention", "CPU")
CPP = ["cpp"] if HAS_CPP else []


def _dense_truth(q, keys, values, q_lens):
    """Causal attention in float64 from contiguous per-sequence K/V (ctx_b, Hkv, D): the definition, unpaged."""
    outs, start = [], 0
    for k, v, q_len in zip(keys, values, q_lens):
        qb = q[start:start + q_len].double()                        # (q_len, Hq, D)
        start += q_len
        group = qb.shape[1] // k.shape[1]
        k = k.double().repeat_interleave(group, dim=1)              # (ctx, Hq, D)
        v = v.double().repeat_interleave(group, dim=1)
        ctx = k.shape[0]
        s = torch.einsum("qhd,khd->hqk", qb, k) / math.sqrt(qb.shape[-1])
        q_pos = torch.arange(ctx - q_len, ctx)
        s = s.masked_fill(torch.arange(ctx)[None, :] > q_pos[:, None], float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), v))
    return torch.cat(outs) if outs else q.double()


def _case(pairs, num_q_heads, num_kv_heads, head_dim, block_size, dtype, device, spare_blocks=3):
    """pairs: (q_len, context_len) per sequence. Returns the op's arguments and the float64 truth."""
    need = [-(-ctx // block_size) for _, ctx in pairs]
    num_blocks = sum(need) + spare_blocks
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, device=device).to(dtype)   # noise
    v_cache = torch.randn_like(k_cache)
    width = max(need + [1])
    block_tables = torch.zeros(len(pairs), width, dtype=torch.int32)
    order = torch.randperm(num_blocks)
    keys, values, used = [], [], 0
    for b, ((_, ctx), nb) in enumerate(zip(pairs, need)):
        block_tables[b, :nb] = order[used:used + nb].int()
        used += nb
        k = torch.randn(ctx, num_kv_heads, head_dim, device=device).to(dtype)
        v = torch.randn(ctx, num_kv_heads, head_dim, device=device).to(dtype)
        pos = torch.arange(ctx)
        slots = block_tables[b].long()[pos // block_size] * block_size + pos % block_size
        store_kv_ref(k, v, k_cache, v_cache, slots.to(device))
        keys.append(k.cpu())
        values.append(v.cpu())
    q_lens = [q_len for q_len, _ in pairs]
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cu[-1]), num_q_heads, head_dim, device=device).to(dtype)
    truth = _dense_truth(q.cpu(), keys, values, q_lens)
    args = (q, k_cache, v_cache, block_tables.to(device), torch.tensor([c for _, c in pairs], dtype=torch.int32,
            device=device), cu.to(device), max(q_lens + [0]), max([c for _, c in pairs] + [0]))
    return args, truth


def _error(out, truth):
    return (out.double().cpu() - truth).abs()


def _check_close(name, out, eager_err, truth, dtype, pairs):
    err = _error(out, truth)
    # 2x eager's error plus a floor of a few ulps of the output's scale: fused kernels (SDPA's blocked online
    # softmax, Triton tiles) round in another order than eager, so at outputs where eager happens to be exact they
    # still differ by an ulp or two.
    scale = float(truth.abs().max()) if truth.numel() else 1.0
    tol = 2 * eager_err + 4 * torch.finfo(dtype).eps * max(scale, 1.0)
    worst = float(err.max()) if err.numel() else 0.0
    if not worst <= tol:   # also catches NaN
        n, h, d = divmod_index(int(err.argmax()), err.shape)
        bad_tokens = sorted(set((err > tol).nonzero()[:, 0].tolist()))[:10]
        raise AssertionError(f"{name}: max error {worst:.3g} > tol {tol:.3g} (eager {eager_err:.3g}) at token {n} "
                             f"head {h} dim {d}; tokens over tol: {bad_tokens}; (q_len, ctx) per sequence {pairs}")


def divmod_index(flat, shape):
    n, rest = divmod(flat, shape[1] * shape[2])
    h, d = divmod(rest, shape[2])
    return n, h, d


def _run_all(pairs, hq, hkv, d, block_size, dtype, device, backends=BACKENDS):
    args, truth = _case(pairs, hq, hkv, d, block_size, dtype, device)
    scale = 1 / math.sqrt(d)
    eager = float(_error(paged_attention_ref(*args, scale=scale), truth).max()) if truth.numel() else 0.0
    ran = []
    for backend in backends:
        if _unavailable(backend, args[0], block_size) is not None:
            continue
        out = paged_attention(*args, scale=scale, backend=backend)
        assert out.shape == args[0].shape and out.dtype == dtype, (backend, out.shape, out.dtype)
        _check_close(backend, out, eager, truth, dtype, pairs)
        ran.append(backend)
    return ran


DECODE = [(1, 1), (1, 16), (1, 17), (1, 40), (1, 5)]
PREFILL = [(7, 7), (16, 16), (3, 3)]
PREFIX = [(9, 29), (1, 21), (5, 37), (12, 12)]          # prefixes of 20, 20, 32, 0 tokens
MIXED = [(1, 30), (6, 6), (4, 23), (1, 1)]
SHAPES = [  # (Hq, Hkv, D, block_size)
    (6, 2, 24, 16), (4, 4, 64, 5), (8, 1, 40, 1), (4, 2, 8, 32),
]


@pytest.mark.parametrize("pairs", [DECODE, PREFILL, PREFIX, MIXED], ids=["decode", "prefill", "prefix", "mixed"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "hq{}-hkv{}-d{}-bs{}".format(*s))
def test_fp32_all_backends(seed, pairs, shape):
    ran = _run_all(pairs, *shape, torch.float32, "cpu")
    assert {"reference", "sdpa", "triton", *CPP} <= set(ran), ran


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("pairs", [DECODE, PREFIX], ids=["decode", "prefix"])
def test_other_dtypes_cpu(seed, dtype, pairs):
    # bf16 tl.dot is wrong under the Triton interpreter: the 16-bit Triton path is tested on a GPU only.
    ran = _run_all(pairs, 6, 2, 24, 16, dtype, "cpu", backends=("reference", "sdpa", "cpp"))
    assert ran == (["reference", "sdpa"] if dtype == torch.float64 else ["reference", "sdpa", *CPP])


@pytest.mark.parametrize("num_splits", [2, 3, 11])  # 11: more splits than the merge takes at once
@pytest.mark.parametrize("pairs", [DECODE, [(40, 40), (9, 29)]], ids=["decode", "prefill"])
def test_triton_split_kv(seed, num_splits, pairs):
    """The split-KV path (chosen on GPUs for decode), forced here: rows before a split's first key see nothing."""
    from mrt_kernels._paged_attention_triton import paged_attention_triton

    args, truth = _case(pairs, 6, 2, 24, 16, torch.float32, "cpu")
    scale = 1 / math.sqrt(24)
    eager = float(_error(paged_attention_ref(*args, scale=scale), truth).max())
    out = paged_attention_triton(*args, scale, num_splits=num_splits, block_n=16)
    _check_close(f"triton split {num_splits}", out, eager, truth, torch.float32, pairs)


def test_no_new_tokens_in_some_sequences(seed):
    # A sequence with q_len 0 (e.g. waiting on a fork) contributes no rows and must not disturb the others.
    ran = _run_all([(0, 9), (3, 11), (0, 1)], 4, 2, 16, 4, torch.float32, "cpu")
    assert {"triton", "sdpa", *CPP} <= set(ran)


@pytest.mark.skipif(not HAS_CPP, reason="mrt_kernels._C has no paged_attention CPU kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pairs", [[(40, 40), (33, 50), (1, 300)], [(17, 100), (16, 16), (2, 65)]],
                         ids=["tiles", "tile-edges"])
def test_cpp_query_tiles(seed, dtype, pairs):
    """The C++ kernel splits a sequence's new tokens into tiles of 16: runs of 16, 17, 33, 40 cross tile edges."""
    assert _run_all(pairs, 6, 2, 40, 16, dtype, "cpu", backends=("reference", "cpp")) == ["reference", "cpp"]


def _forked_case(forks, extras, q_lens, trunk_len, hq, hkv, d, block_size, dtype):
    """Sequences forked from one trunk, laid out as the engine does: sequence b shares the trunk's whole blocks
    before its fork point forks[b], owns a copy of the partly filled block there (copy-on-write) and its own blocks
    after; its context is trunk[:fork] + extras[b] computed tokens of its own + q_lens[b] new ones."""
    trunk_k = torch.randn(trunk_len, hkv, d).to(dtype)
    trunk_v = torch.randn(trunk_len, hkv, d).to(dtype)
    ctx_lens = [f + e + q for f, e, q in zip(forks, extras, q_lens)]
    own = [torch.randn(2, c - f, hkv, d).to(dtype) for f, c in zip(forks, ctx_lens)]
    trunk_blocks = -(-trunk_len // block_size)
    need = sum(-(-c // block_size) for c in ctx_lens) + trunk_blocks + 2
    k_cache = torch.randn(need, block_size, hkv, d).to(dtype)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(need).tolist()
    trunk_ids, order = order[:trunk_blocks], order[trunk_blocks:]
    pos = torch.arange(trunk_len)
    store_kv_ref(trunk_k, trunk_v, k_cache, v_cache, torch.tensor(trunk_ids)[pos // block_size] * block_size +
                 pos % block_size)
    width = max(-(-c // block_size) for c in ctx_lens)
    tables = torch.zeros(len(forks), width, dtype=torch.int32)
    keys, values = [], []
    for b, (fork, ctx) in enumerate(zip(forks, ctx_lens)):
        shared = fork // block_size
        ids = trunk_ids[:shared] + [order.pop() for _ in range(-(-ctx // block_size) - shared)]
        tables[b, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
        k = torch.cat([trunk_k[:fork], own[b][0][:ctx - fork]])
        v = torch.cat([trunk_v[:fork], own[b][1][:ctx - fork]])
        p = torch.arange(shared * block_size, ctx)          # everything past the shared blocks is this sequence's
        store_kv_ref(k[p], v[p], k_cache, v_cache, tables[b].long()[p // block_size] * block_size + p % block_size)
        keys.append(k)
        values.append(v)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cu[-1]), hq, d).to(dtype)
    args = (q, k_cache, v_cache, tables, torch.tensor(ctx_lens, dtype=torch.int32), cu, max(q_lens), max(ctx_lens))
    return args, _dense_truth(q, keys, values, q_lens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_size", [16, 5])
def test_forked_sequences_share_blocks(seed, dtype, block_size):
    """The engine's layout after forks: branches of one trunk share its whole blocks (several per fork point, fork
    points inside a block and on a block edge), with decode rows, a few multi-token rows and an unforked sequence."""
    forks = [37, 37, 37, 37, 64, 64, 64, 90, 90, 5, 0, 37]
    extras = [9, 0, 30, 3, 1, 11, 0, 4, 17, 0, 0, 2]
    q_lens = [1, 1, 1, 1, 1, 1, 1, 3, 1, 2, 4, 16]
    args, truth = _forked_case(forks, extras, q_lens, 100, 6, 2, 24, block_size, dtype)
    scale = 1 / math.sqrt(24)
    eager = float(_error(paged_attention_ref(*args, scale=scale), truth).max())
    for backend in ("sdpa", *CPP):
        _check_close(backend, paged_attention(*args, scale=scale, backend=backend), eager, truth, dtype,
                     list(zip(q_lens, forks)))


@pytest.mark.skipif(not HAS_CPP, reason="mrt_kernels._C has no paged_attention CPU kernel")
@pytest.mark.parametrize("head_dim", [20, 13, 8])
def test_cpp_head_dims(seed, head_dim):
    """Head dims off the 8-lane vector width (the C++ kernel's AVX2 scores need D % 8 == 0; others take the plain
    loop) and exactly one vector."""
    assert _run_all(MIXED + DECODE, 6, 3, head_dim, 4, torch.float32, "cpu", backends=("reference", "cpp")) == \
        ["reference", "cpp"]


@pytest.mark.skipif(not HAS_CPP, reason="mrt_kernels._C has no paged_attention CPU kernel")
def test_cpp_opcheck():
    args, _ = _case(MIXED, 6, 2, 24, 16, torch.float32, "cpu")
    torch.library.opcheck(torch.ops.mrt_kernels.paged_attention.default, (*args, 0.2))


def test_auto_choice_on_cpu():
    from mrt_kernels.paged_attention import CPP_MAX_ROWS, _select
    q = torch.zeros(3, 4, 8)                                    # 4 query heads over 2 KV heads: 2 rows per token
    assert _select(q, 16, 2, 1, None) == ("cpp" if HAS_CPP else "sdpa")
    assert _select(q, 16, 2, CPP_MAX_ROWS // 2, None) == ("cpp" if HAS_CPP else "sdpa")
    assert _select(q, 16, 2, CPP_MAX_ROWS // 2 + 1, None) == "sdpa"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("pairs", [DECODE, PREFIX, MIXED, [(1, 3000)] * 4], ids=["decode", "prefix", "mixed", "long"])
@pytest.mark.parametrize("shape", [(12, 2, 128, 16), (8, 8, 64, 5), (6, 2, 80, 256)])
def test_gpu(seed, dtype, pairs, shape):
    ran = _run_all(pairs, *shape, dtype, "cuda")
    assert "triton" in ran, ran


def _good():
    args, _ = _case(PREFIX, 6, 2, 24, 16, torch.float32, "cpu")
    names = ("q", "k_cache", "v_cache", "block_tables", "context_lens", "cu_seqlens_q", "max_seqlen_q",
             "max_context_len")
    return dict(zip(names, args), scale=0.2)


@pytest.mark.parametrize("bad, name", [
    (lambda a: a.update(q=a["q"][0]), "q"),
    (lambda a: a.update(q=a["q"][:, :5]), "k_cache"),                      # 5 heads, not a multiple of 2
    (lambda a: a.update(k_cache=a["k_cache"][..., :8]), "k_cache"),
    (lambda a: a.update(v_cache=a["v_cache"][1:]), "v_cache"),
    (lambda a: a.update(v_cache=a["v_cache"].double()), "v_cache"),
    (lambda a: a.update(block_tables=a["block_tables"].long()), "block_tables"),
    (lambda a: a.update(context_lens=a["context_lens"][:2]), "context_lens"),
    (lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"].long()), "cu_seqlens_q"),
    (lambda a: a["cu_seqlens_q"].__setitem__(-1, 3), "cu_seqlens_q"),
    (lambda a: a["context_lens"].__setitem__(0, 2), "context_lens"),         # fewer than its 9 new tokens
    (lambda a: a["context_lens"].__setitem__(2, 200), "context_lens"),       # past its blocks
    (lambda a: a["block_tables"].__setitem__((0, 0), 99), "block_tables"),
    (lambda a: a.update(max_seqlen_q=4), "max_seqlen_q"),
    (lambda a: a.update(max_context_len=30), "max_context_len"),
    (lambda a: a.update(scale=0.0), "scale"),
    (lambda a: a.update(scale=float("nan")), "scale"),
])
def test_bad_input(bad, name):
    args = _good()
    bad(args)
    with pytest.raises(ValueError, match=name):
        paged_attention(**args)


def test_backend_names():
    args = _good()
    with pytest.raises(BackendError, match="flash"):
        paged_attention(**args, backend="flash_attn")
    with pytest.raises(BackendError, match="unknown"):
        paged_attention(**args, backend="nope")
    # flash-attn's kernels are "flash_attn"; the project's CUDA sources have no paged attention: no "cuda" backend.
    with pytest.raises(BackendError, match=r"unknown backend 'cuda'; choose one of \('flash_attn'"):
        paged_attention(**args, backend="cuda")
    with pytest.raises(BackendError, match="fp32 / fp16 / bf16"):
        paged_attention(**{**args, "q": args["q"].double(), "k_cache": args["k_cache"].double(),
                           "v_cache": args["v_cache"].double()}, backend="cpp")


def test_check_false_skips_the_checks_but_the_cpp_kernel_still_guards_memory():
    # The model checks the arguments in its first layer only and passes check=False to the others.
    q = torch.randn(2, 4, 8)
    cache = torch.randn(3, 4, 2, 8)
    tables = torch.tensor([[0, 7]], dtype=torch.int32)           # block 7 does not exist
    ctx, cu = torch.tensor([6], dtype=torch.int32), torch.tensor([0, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match="block_tables"):
        paged_attention(q, cache, cache, tables, ctx, cu, 2, 6, scale=0.3)
    if HAS_CPP:
        with pytest.raises(RuntimeError, match="out of range"):
            paged_attention(q, cache, cache, tables, ctx, cu, 2, 6, scale=0.3, check=False, backend="cpp")
    ok = torch.tensor([[0, 2]], dtype=torch.int32)
    for backend in ("sdpa", *CPP):
        out = paged_attention(q, cache, cache, ok, ctx, cu, 2, 6, scale=0.3, check=False, backend=backend)
        torch.testing.assert_close(out, paged_attention(q, cache, cache, ok, ctx, cu, 2, 6, scale=0.3))
