"""Paged attention: the new tokens of B sequences attend, causally, to keys and values kept in a paged KV cache.

Definition. Sequence b has context_lens[b] positions; its q_len_b = cu_seqlens_q[b+1] - cu_seqlens_q[b] new tokens
are the last ones: the j-th sits at position context_lens[b] - q_len_b + j and attends to key positions 0..that
position. Position p of sequence b is in cache block block_tables[b, p // block_size], slot p % block_size. The new
tokens' K/V are already in the cache (store_kv first). So prefill (with or without a cached prefix, which may end
inside a block) and decode (q_len 1) are one op. GQA: query head h reads KV head h // (Hq / Hkv).

    out[n, h] = sum_p softmax_p(scale * q[n, h] . K[p, h // G]) V[p, h // G]     over the visible positions p

Backends (no backward: generation only, so no autograd.Function):
- "triton": the project's own kernel (_paged_attention_triton.py), any block size, fp32 / fp16 / bf16;
- "flash_attn": flash-attn's flash_attn_with_kvcache (decode) / flash_attn_varlen_func (prefill) where
  `import flash_attn` works, for fp16 / bf16 and block sizes that are multiples of 256 (flash-attn 2's page size);
- "cpp": the C++ CPU kernel (csrc/paged_attention.cpp): reads every key/value row in place from its block with an
  fp32 online softmax, so branches that share a trace's blocks never copy them; fp32 / fp16 / bf16;
- "sdpa": gather the blocks, then torch's scaled_dot_product_attention: one padded call with a bottom-right causal
  mask for the one-token (decode) rows, one call per sequence for the longer ones (prefill); runs on any device;
- "reference": gather per sequence, then attention written out plainly (the definition).
There is no "cuda" backend: the project's CUDA sources (csrc/*.cu) have no paged attention kernel, and flash-attn's
is called what it is ("cuda" was once its alias). Auto: flash_attn, then triton, then sdpa on a GPU; on the CPU
cpp when a sequence's rows per KV head (longest query run x Hq / Hkv) are at most CPP_MAX_ROWS (decode), else sdpa,
whose blocked matmuls win once a sequence has more new tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._backend import BackendError, flash_attn_error, select_backend, unavailable_reason

__all__ = ["paged_attention", "paged_attention_ref", "PAGED_ATTENTION_BACKENDS"]

PAGED_ATTENTION_BACKENDS = ("flash_attn", "triton", "cpp", "sdpa", "reference")
# Most query rows per KV head and sequence (longest query run x Hq / Hkv) for which the auto choice on the CPU takes
# the C++ kernel: its per-row dot products lose to SDPA's blocked matmuls beyond that (measured: 24 rows still win or
# tie at head dims 32 and 128, 48 rows lose; the "chunk" rows of benchmarks/bench_attention.py --size cpu).
CPP_MAX_ROWS = 24


# ---------------------------------------------------------------------------------------------------------------------
# Reference: the definition.

def paged_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                        context_lens: torch.Tensor, cu_seqlens_q: torch.Tensor, max_seqlen_q: int,
                        max_context_len: int, *, scale: float) -> torch.Tensor:
    """Per sequence: gather its blocks into contiguous K/V, then dense causal attention in q's dtype (softmax in at
    least fp32, as eager attention in the models does)."""
    n_tokens, num_q_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    cu, ctx_lens = cu_seqlens_q.tolist(), context_lens.tolist()
    for b, ctx in enumerate(ctx_lens):
        q0, q1 = cu[b], cu[b + 1]
        if q1 == q0:
            continue
        blocks = block_tables[b, :-(-ctx // block_size)].long()
        k = k_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:ctx].repeat_interleave(group, dim=1)  # (L, Hq, D)
        v = v_cache[blocks].reshape(-1, num_kv_heads, head_dim)[:ctx].repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[q0:q1], k) * scale                                  # (Hq, q_len, L)
        q_pos = ctx - (q1 - q0) + torch.arange(q1 - q0, device=q.device)
        hidden = torch.arange(ctx, device=q.device)[None, :] > q_pos[:, None]                       # (q_len, L)
        scores = scores.masked_fill(hidden, float("-inf"))
        probs = scores.softmax(-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, v)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Kernels: the Triton one lives in _paged_attention_triton.py (imported lazily: it needs Triton); the others here.

def _paged_attention_sdpa(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                          max_context_len, scale):
    n_tokens = q.shape[0]
    batch = context_lens.shape[0]
    if n_tokens == 0 or batch == 0:
        return torch.empty_like(q)
    if max_seqlen_q == 1 and n_tokens == batch:            # every sequence has one new token: one padded call
        return _sdpa_padded(q, k_cache, v_cache, block_tables, context_lens, max_context_len, scale)
    # Sequences with several new tokens get a call each (padding them to the longest would waste B x Tq x L work);
    # the one-token rows share one padded call.
    cu, ctx = cu_seqlens_q.tolist(), context_lens.tolist()
    out = torch.empty_like(q)
    single = [b for b in range(batch) if cu[b + 1] - cu[b] == 1]
    for b in range(batch):
        q0, q1 = cu[b], cu[b + 1]
        if q1 - q0 > 1:
            out[q0:q1] = _sdpa_one(q[q0:q1], k_cache, v_cache, block_tables[b], ctx[b], scale)
    if single:
        sel = torch.tensor(single, device=q.device)
        rows = cu_seqlens_q.long()[sel]
        ctx_s = context_lens[sel]
        out[rows] = _sdpa_padded(q.index_select(0, rows), k_cache, v_cache, block_tables.index_select(0, sel), ctx_s,
                                 max(ctx[b] for b in single), scale)
    return out


def _gather(cache, table, length):
    """(length, Hkv, D): positions 0..length-1 of one sequence, gathered from its blocks."""
    block_size = cache.shape[1]
    blocks = table[:-(-length // block_size)].long()
    return cache.index_select(0, blocks).flatten(0, 1)[:length]


def _sdpa_one(q, k_cache, v_cache, table, ctx, scale):
    """One sequence's q (T, Hq, D), its last T positions of ctx, causal: SDPA's own causal kernel when there is no
    cached prefix (T == ctx), else a bottom-right mask."""
    t, num_q_heads, _ = q.shape
    k = _gather(k_cache, table, ctx).transpose(0, 1)[None]            # (1, Hkv, ctx, D)
    v = _gather(v_cache, table, ctx).transpose(0, 1)[None]
    gqa = num_q_heads != k.shape[1]
    qs = q.transpose(0, 1)[None]                                      # (1, Hq, T, D)
    if t == ctx:
        o = F.scaled_dot_product_attention(qs, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        pos = torch.arange(ctx - t, ctx, device=q.device)
        visible = torch.arange(ctx, device=q.device)[None, :] <= pos[:, None]                        # (T, ctx)
        o = F.scaled_dot_product_attention(qs, k, v, attn_mask=visible, scale=scale, enable_gqa=gqa)
    return o[0].transpose(0, 1)


def _sdpa_padded(q, k_cache, v_cache, block_tables, context_lens, length, scale):
    """One token per sequence (B rows of q): keys padded to the longest context and masked."""
    batch, num_q_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    nb = -(-length // block_size)
    blocks = block_tables[:, :nb].reshape(-1).long()                                  # (B * nb,)
    k = k_cache.index_select(0, blocks).view(batch, nb * block_size, num_kv_heads, head_dim)[:, :length]
    v = v_cache.index_select(0, blocks).view(batch, nb * block_size, num_kv_heads, head_dim)[:, :length]
    # GQA without copying K/V: the G query heads of a KV head become G query rows of that head.
    qg = q.view(batch, num_kv_heads, group, head_dim)                                 # (B, Hkv, G, D)
    visible = torch.arange(length, device=q.device)[None, :] < context_lens.long()[:, None]          # (B, L)
    out = F.scaled_dot_product_attention(qg, k.transpose(1, 2), v.transpose(1, 2), attn_mask=visible[:, None, None],
                                         scale=scale)                                 # (B, Hkv, G, D)
    return out.reshape(batch, num_q_heads, head_dim)


def _paged_attention_flash(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                           max_context_len, scale):
    from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

    if max_seqlen_q == 1 and q.shape[0] == context_lens.shape[0]:    # pure decode: one token per sequence
        return flash_attn_with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=context_lens,
                                       block_table=block_tables, softmax_scale=scale, causal=True).squeeze(1)
    # flash-attn 2 aligns the causal mask bottom-right when q is shorter than k, as this op defines it.
    cu_seqlens_k = F.pad(context_lens.cumsum(0, dtype=torch.int32), (1, 0))
    return flash_attn_varlen_func(q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_context_len,
                                  softmax_scale=scale, causal=True, block_table=block_tables)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: checks, then backend choice.

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _unavailable(backend: str, q: torch.Tensor, block_size: int) -> str | None:
    """Why `backend` (one of PAGED_ATTENTION_BACKENDS) cannot run attention of q over a cache of block_size, or None:
    the rules of _backend.unavailable_reason, then this op's own (dtypes, flash-attn's page and head sizes)."""
    if backend in ("reference", "sdpa"):
        return None
    if backend == "cpp":
        reason = unavailable_reason("cpp", q.device, cpp_op="paged_attention")
        if reason is None and q.dtype not in _DTYPES:
            reason = f"the C++ kernel takes fp32 / fp16 / bf16 (it accumulates in fp32), not {q.dtype}"
        return reason
    if backend == "triton":
        reason = unavailable_reason("triton", q.device, triton_ok=True)
        if reason is None and q.dtype not in _DTYPES:
            reason = f"the Triton kernel takes fp32 / fp16 / bf16, not {q.dtype}"
        return reason
    if backend != "flash_attn":
        raise BackendError(f"paged_attention: unknown backend {backend!r}; choose one of {PAGED_ATTENTION_BACKENDS}")
    if q.device.type != "cuda":
        return f"flash-attn runs on CUDA tensors, these are on {q.device}"
    if flash_attn_error() is not None:
        return flash_attn_error()
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn takes fp16 / bf16, not {q.dtype}"
    if block_size % 256 != 0:
        return f"flash-attn 2 needs blocks of a multiple of 256 tokens, the cache has {block_size}"
    if q.shape[2] % 8 != 0 or q.shape[2] > 256:
        return f"flash-attn needs a head dim that is a multiple of 8 and at most 256, not {q.shape[2]}"
    return None


def _auto_order(q: torch.Tensor, num_kv_heads: int, max_seqlen_q: int) -> tuple[str, ...]:
    """The backends an automatic choice tries, fastest first (the module docstring says why)."""
    if q.device.type == "cuda":
        return ("flash_attn", "triton", "sdpa", "reference")
    rows = max_seqlen_q * (q.shape[1] // max(num_kv_heads, 1))
    return ("cpp", "sdpa", "reference") if rows <= CPP_MAX_ROWS else ("sdpa", "reference")


def _select(q: torch.Tensor, block_size: int, num_kv_heads: int, max_seqlen_q: int, requested: str | None) -> str:
    return select_backend("paged_attention", q.device, requested, names=PAGED_ATTENTION_BACKENDS,
                          unavailable=lambda backend: _unavailable(backend, q, block_size),
                          auto_order=_auto_order(q, num_kv_heads, max_seqlen_q))


def _check(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q, max_context_len, scale):
    """Every argument, raising ValueError naming it: the tensors, the scalars, then (CPU only) the metadata's values."""
    _check_tensors(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q)
    _check_scalars(max_seqlen_q, max_context_len, scale)
    # Value checks where the metadata is on the CPU; on a GPU they would cost a device sync per step.
    if q.device.type == "cpu":
        _check_metadata(q.shape[0], k_cache.shape[:2], block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                        max_context_len)


def _check_tensors(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q) -> None:
    """Types, shapes, dtypes, strides and devices."""
    named = dict(q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables, context_lens=context_lens,
                 cu_seqlens_q=cu_seqlens_q)
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"paged_attention: {name} must be a tensor, got {type(t).__name__}")
    if q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"paged_attention: q must be a float (N, Hq, D) tensor, got {tuple(q.shape)} {q.dtype}")
    n_tokens, num_q_heads, head_dim = q.shape
    if k_cache.dim() != 4 or k_cache.shape[3] != head_dim:
        raise ValueError(f"paged_attention: k_cache must be (num_blocks, block_size, Hkv, {head_dim}), "
                         f"got {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"paged_attention: v_cache shape {tuple(v_cache.shape)} differs from k_cache "
                         f"{tuple(k_cache.shape)}")
    if num_q_heads % k_cache.shape[2] != 0:
        raise ValueError(f"paged_attention: q has {num_q_heads} heads, not a multiple of the cache's "
                         f"{k_cache.shape[2]} KV heads (k_cache)")
    for name in ("k_cache", "v_cache"):
        if named[name].dtype != q.dtype:
            raise ValueError(f"paged_attention: {name} dtype {named[name].dtype} differs from q dtype {q.dtype}")
        if named[name].stride(-1) != 1:
            raise ValueError(f"paged_attention: {name} must be contiguous in its last dim")
    for name, t in named.items():
        if t.device != q.device:
            raise ValueError(f"paged_attention: {name} is on {t.device}, q on {q.device}")
    if block_tables.dim() != 2 or block_tables.dtype != torch.int32:
        raise ValueError(f"paged_attention: block_tables must be (B, max_blocks) int32, got "
                         f"{tuple(block_tables.shape)} {block_tables.dtype}")
    batch = block_tables.shape[0]
    if context_lens.shape != (batch,) or context_lens.dtype != torch.int32:
        raise ValueError(f"paged_attention: context_lens must be ({batch},) int32, got {tuple(context_lens.shape)} "
                         f"{context_lens.dtype}")
    if cu_seqlens_q.shape != (batch + 1,) or cu_seqlens_q.dtype != torch.int32:
        raise ValueError(f"paged_attention: cu_seqlens_q must be ({batch + 1},) int32, got "
                         f"{tuple(cu_seqlens_q.shape)} {cu_seqlens_q.dtype}")


def _check_scalars(max_seqlen_q, max_context_len, scale) -> None:
    for name, x in (("max_seqlen_q", max_seqlen_q), ("max_context_len", max_context_len)):
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            raise ValueError(f"paged_attention: {name} must be an int >= 0, got {x!r}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"paged_attention: scale must be a finite float > 0, got {scale!r}")


def _check_metadata(n_tokens, cache_shape, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                    max_context_len) -> None:
    """The values of CPU metadata: query runs, context lengths and their bounds, block ids. cache_shape:
    (num_blocks, block_size)."""
    num_blocks, block_size = cache_shape
    batch = block_tables.shape[0]
    cu, ctx = cu_seqlens_q.long(), context_lens.long()
    q_lens = cu[1:] - cu[:-1]
    if int(cu[0]) != 0 or int(cu[-1]) != n_tokens or bool((q_lens < 0).any()):
        raise ValueError(f"paged_attention: cu_seqlens_q must rise from 0 to N = {n_tokens}, got {cu.tolist()}")
    if batch and int(q_lens.max()) > max_seqlen_q:
        raise ValueError(f"paged_attention: max_seqlen_q = {max_seqlen_q} < the longest query run "
                         f"{int(q_lens.max())}")
    if bool((ctx < q_lens).any()):
        b = int((ctx < q_lens).nonzero()[0])
        raise ValueError(f"paged_attention: context_lens[{b}] = {int(ctx[b])} < its {int(q_lens[b])} new tokens")
    if batch and int(ctx.max()) > max_context_len:
        raise ValueError(f"paged_attention: max_context_len = {max_context_len} < context_lens max {int(ctx.max())}")
    if bool((ctx > block_tables.shape[1] * block_size).any()):
        raise ValueError(f"paged_attention: context_lens exceed block_tables' {block_tables.shape[1]} blocks of "
                         f"{block_size}")
    used = torch.arange(block_tables.shape[1])[None, :] < (ctx[:, None] + block_size - 1) // block_size
    entries = block_tables[used]
    if entries.numel() and (int(entries.min()) < 0 or int(entries.max()) >= num_blocks):
        raise ValueError(f"paged_attention: block_tables holds blocks outside [0, {num_blocks})")


# ---------------------------------------------------------------------------------------------------------------------
# Public function.

def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                    context_lens: torch.Tensor, cu_seqlens_q: torch.Tensor, max_seqlen_q: int, max_context_len: int,
                    *, scale: float, backend: str | None = None, check: bool = True) -> torch.Tensor:
    """Causal attention of the N new tokens q (N, Hq, D) against the paged cache; returns (N, Hq, D) in q's dtype.

    k_cache / v_cache: (num_blocks, block_size, Hkv, D), Hq a multiple of Hkv; block_tables (B, max_blocks) int32;
    context_lens (B,) int32 (cached + new tokens); cu_seqlens_q (B+1,) int32; max_seqlen_q / max_context_len: ints
    bounding q_len_b / context_lens (they size grids and buffers without a device sync). backend: see the module
    docstring. check=False skips every argument check (the C++ and CUDA kernels still guard their memory accesses):
    for a caller that runs arguments of the same shapes, dtypes and values through many layers and had the first
    call check them, as the model does.
    """
    if check:
        _check(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q, max_context_len, scale)
    which = _select(q, k_cache.shape[1], k_cache.shape[2], max_seqlen_q, backend)
    args = (q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q, max_context_len)
    if which == "reference":
        return paged_attention_ref(*args, scale=scale)
    if which == "sdpa":
        return _paged_attention_sdpa(*args, float(scale))
    if which == "flash_attn":
        return _paged_attention_flash(*args, float(scale))
    if which == "cpp":
        if q.stride(-1) != 1:
            q = q.contiguous()
        return torch.ops.mrt_kernels.paged_attention(q, *args[1:], float(scale))
    from ._paged_attention_triton import paged_attention_triton

    if q.stride(-1) != 1:
        q = q.contiguous()
    return paged_attention_triton(q, *args[1:], float(scale))

