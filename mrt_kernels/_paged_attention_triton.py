"""The project's Triton kernel for paged attention (see paged_attention.py for the op's definition).

One program per (sequence b, tile of its new tokens, KV head, key split). The rows of a tile are (token, query head)
pairs: the GROUP = Hq / Hkv query heads that share a KV head are stacked with the tile's tokens, so each key/value row
is read once per tile for all of them and decode (one token, GROUP heads) still feeds tl.dot a tall matrix.

Keys are walked in chunks of BLOCK_N positions; the cache row of position p is found per position through the block
table (block block_tables[b, p // block_size], offset p % block_size), so any block size works and a prefix may end
anywhere inside a block. Online softmax over the chunks, in base 2:
    s_j = (q . k_j) * scale * log2(e),  m' = max(m, max_j s_j),  l' = l * 2^(m - m') + sum_j 2^(s_j - m'),
    acc' = acc * 2^(m - m') + sum_j 2^(s_j - m') v_j,   out = acc / l.
Causal: row (token i of sequence b) sits at position context_len - q_len + i and sees keys 0..that position. A row
that sees no key of a chunk keeps m = -inf; the exponentials then use 0 in place of m' so they give 0, not NaN.

Split-KV (flash-decoding): with few (sequence, head) pairs, as in decode, the key range is cut into num_splits pieces
run by separate programs that write (m, l, acc) partials; a second kernel merges them:
    M = max_s m_s,  out = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) l_s.
No backward: generation only.

Compiles: a rollout calls these kernels with ever new batch sizes, prefill lengths and context lengths. Everything
that follows them (tiles per sequence, the split count and length, rows, the block-table width) is a runtime argument,
and those whose divisibility by 16 varies are kept out of Triton's specialization (do_not_specialize; the split length
is always a multiple of BLOCK_N), so a model compiles four attention variants (decode / prefill tiles, with / without
splits) and one merge (benchmarks/sm90_compile.py counts them over a simulated rollout).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["stride_bt", "total_rows", "tiles"])
def _paged_attention_kernel(
        q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, cu_seqlens_q_ptr,
        out_ptr, part_acc_ptr, part_ml_ptr,
        stride_qn, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
        stride_on, stride_oh, num_q_heads, total_rows, split_len, scale_log2, tiles,
        GROUP: tl.constexpr, TOKENS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
        HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        SPLIT: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // tiles
    tile = pid % tiles
    kvh = tl.program_id(1)
    split = tl.program_id(2)

    q_start = tl.load(cu_seqlens_q_ptr + b)
    q_len = tl.load(cu_seqlens_q_ptr + b + 1) - q_start
    ctx = tl.load(context_lens_ptr + b)
    first_tok = tile * TOKENS
    if first_tok >= q_len:
        return

    r = tl.arange(0, BLOCK_R)
    tok = first_tok + r // GROUP                              # (BLOCK_R,) token within the sequence
    head = kvh * GROUP + r % GROUP                            # (BLOCK_R,) query head
    row_ok = (r < TOKENS * GROUP) & (tok < q_len)
    pos = ctx - q_len + tl.minimum(tok, q_len - 1)            # (BLOCK_R,) query position; padding rows copy a real one
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM

    n_idx = (q_start + tok).to(tl.int64)
    q = tl.load(q_ptr + n_idx[:, None] * stride_qn + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)          # (BLOCK_R, BLOCK_D)

    # Keys this program reads: its split of [0, last position of the tile + 1).
    key_end = ctx - q_len + tl.minimum(first_tok + TOKENS, q_len)
    lo = split * split_len
    hi = tl.minimum(lo + split_len, key_end)

    m_i = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_R,), tl.float32)
    acc = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
    bt_row = block_tables_ptr + b.to(tl.int64) * stride_bt
    for start in range(lo, hi, BLOCK_N):
        m_i, l_i, acc = _attend_chunk(
            q, m_i, l_i, acc, start, hi, pos, bt_row, k_cache_ptr, v_cache_ptr, kvh, stride_kb, stride_ks, stride_kh,
            stride_vb, stride_vs, stride_vh, scale_log2, d, d_ok, BLOCK_SIZE=BLOCK_SIZE, BLOCK_N=BLOCK_N, IEEE=IEEE)
    _store_rows(acc, m_i, l_i, out_ptr, part_acc_ptr, part_ml_ptr, n_idx, head, row_ok, d, d_ok, split, total_rows,
                num_q_heads, stride_on, stride_oh, HEAD_DIM=HEAD_DIM, SPLIT=SPLIT)


@triton.jit
def _attend_chunk(q, m_i, l_i, acc, start, hi, pos, bt_row, k_cache_ptr, v_cache_ptr, kvh, stride_kb, stride_ks,
                  stride_kh, stride_vb, stride_vs, stride_vh, scale_log2, d, d_ok, BLOCK_SIZE: tl.constexpr,
                  BLOCK_N: tl.constexpr, IEEE: tl.constexpr):
    """The key positions [start, start + BLOCK_N) below hi into the running (m, l, acc) of the tile's rows: one step
    of the online softmax of the module docstring (inlined into the kernel's loop). Returns the new (m, l, acc)."""
    p = start + tl.arange(0, BLOCK_N)                         # (BLOCK_N,) key positions
    p_ok = p < hi
    blk = tl.load(bt_row + p // BLOCK_SIZE, mask=p_ok, other=0).to(tl.int64)
    off = (p % BLOCK_SIZE).to(tl.int64)
    kv_mask = p_ok[:, None] & d_ok[None, :]
    k = tl.load(k_cache_ptr + blk[:, None] * stride_kb + off[:, None] * stride_ks + kvh * stride_kh + d[None, :],
                mask=kv_mask, other=0.0)                      # (BLOCK_N, BLOCK_D)
    v = tl.load(v_cache_ptr + blk[:, None] * stride_vb + off[:, None] * stride_vs + kvh * stride_vh + d[None, :],
                mask=kv_mask, other=0.0)
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = s * scale_log2                                        # (BLOCK_R, BLOCK_N), base-2 logits
    s = tl.where((p[None, :] <= pos[:, None]) & p_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    e = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(e, axis=1)
    if IEEE:
        pv = tl.dot(e, v.to(tl.float32), input_precision="ieee")
    else:
        pv = tl.dot(e.to(v.dtype), v)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit
def _store_rows(acc, m_i, l_i, out_ptr, part_acc_ptr, part_ml_ptr, n_idx, head, row_ok, d, d_ok, split, total_rows,
                num_q_heads, stride_on, stride_oh, HEAD_DIM: tl.constexpr, SPLIT: tl.constexpr):
    """The tile's rows: out = acc / l; with SPLIT, the split's partials (m, l, acc) for _merge_splits_kernel."""
    if SPLIT:
        # Partials: acc (S, N, Hq, D) and (m, l) (S, N, Hq, 2), fp32; row of (N, Hq) = token * Hq + head.
        row = split.to(tl.int64) * total_rows + n_idx * num_q_heads + head
        tl.store(part_acc_ptr + row[:, None] * HEAD_DIM + d[None, :], acc,
                 mask=row_ok[:, None] & d_ok[None, :])
        tl.store(part_ml_ptr + row * 2, m_i, mask=row_ok)
        tl.store(part_ml_ptr + row * 2 + 1, l_i, mask=row_ok)
    else:
        out = acc / l_i[:, None]
        tl.store(out_ptr + n_idx[:, None] * stride_on + head[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit(do_not_specialize=["rows", "num_splits"])
def _merge_splits_kernel(part_acc_ptr, part_ml_ptr, out_ptr, rows, num_q_heads, stride_on, stride_oh, num_splits,
                         BLOCK_S: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program per row (token n, query head h) of (N, Hq): out = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) l_s,
    # over the splits in chunks of BLOCK_S: a first pass for M, a second for the two sums.
    row = tl.program_id(0).to(tl.int64)
    m_max = tl.full((BLOCK_S,), float("-inf"), tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = tl.load(part_ml_ptr + (s * rows + row) * 2, mask=s < num_splits, other=float("-inf"))
        m_max = tl.maximum(m_max, m)
    m_all = tl.max(m_max, axis=0)                             # finite: split 0 always holds key 0
    d = tl.arange(0, BLOCK_D)
    num = tl.zeros((BLOCK_D,), tl.float32)
    den = tl.zeros((BLOCK_S,), tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s_ok = s < num_splits
        m = tl.load(part_ml_ptr + (s * rows + row) * 2, mask=s_ok, other=float("-inf"))
        l = tl.load(part_ml_ptr + (s * rows + row) * 2 + 1, mask=s_ok, other=0.0)
        w = tl.exp2(m - m_all)                                # 0 on masked splits
        acc = tl.load(part_acc_ptr + (s[:, None] * rows + row) * HEAD_DIM + d[None, :],
                      mask=s_ok[:, None] & (d[None, :] < HEAD_DIM), other=0.0)
        num += tl.sum(acc * w[:, None], axis=0)
        den += l * w
    out = num / tl.sum(den, axis=0)
    n = row // num_q_heads
    h = row % num_q_heads
    tl.store(out_ptr + n * stride_on + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def _sm_count(device: torch.device) -> int | None:
    """Multiprocessors of a CUDA device; None elsewhere (the interpreter: no split unless a test forces one)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_splits(device: torch.device, programs: int, max_context_len: int, block_n: int) -> int:
    """Enough programs to fill the GPU (about 4 per SM, to hide load latency) when (sequence, tile, head) programs
    alone do not."""
    sms = _sm_count(device)
    if sms is None:
        return 1
    want = triton.cdiv(4 * sms, max(programs, 1))
    # Each split keeps at least 4 chunks of keys so the merge stays cheap relative to the work.
    return max(1, min(want, triton.cdiv(max_context_len, 4 * block_n), 64))


def _tiles(group: int, head_dim: int, decode: bool, fp32_gpu: bool, block_n: int | None) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, BLOCK_N): rows of (token, query head) per tile, padded head dim, keys per chunk.

    Rows: decode needs only GROUP rows (tl.dot wants >= 16); prefill tiles take 64 rows of tokens x heads (a
    warpgroup's wgmma needs 64). Keys: 64 (32 past head dim 128). fp32 prefill on a GPU (IEEE products, no tensor
    cores): the FMA dot of a (64, D) x (D, 64) block needs more than 255 registers a thread at 4 warps (ptxas spills
    ~8 KB a thread, benchmarks/sm90_compile.py), so 16 keys a chunk; the interpreter keeps 64 (fewer, slower steps)."""
    block_r = max(16, triton.next_power_of_2(group) if decode else 64, triton.next_power_of_2(group))
    block_d = max(16, triton.next_power_of_2(head_dim))
    if block_n is None:
        block_n = 16 if fp32_gpu and block_r >= 64 else 64 if block_d <= 128 else 32
    return block_r, block_d, block_n


def paged_attention_triton(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                           max_context_len, scale, *, num_splits: int | None = None,
                           block_n: int | None = None) -> torch.Tensor:
    """Triton paged attention on checked inputs (q (N, Hq, D) with stride(-1) == 1; caches with stride(-1) == 1;
    int32 metadata). num_splits / block_n: tuning (None: chosen here); tests force splits on the CPU."""
    n_tokens, num_q_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    batch = context_lens.shape[0]
    out = torch.empty_like(q)
    if n_tokens == 0:
        return out
    ieee = q.dtype == torch.float32
    fp32_gpu = ieee and _sm_count(q.device) is not None
    block_r, block_d, block_n = _tiles(group, head_dim, max_seqlen_q == 1, fp32_gpu, block_n)
    tokens = block_r // group
    tiles = triton.cdiv(max_seqlen_q, tokens)
    if num_splits is None:
        num_splits = _num_splits(q.device, batch * tiles * num_kv_heads, max_context_len, block_n)
    split_len = triton.cdiv(triton.cdiv(max(max_context_len, 1), num_splits), block_n) * block_n
    split = num_splits > 1
    # fp32 on a GPU (sm_90, Triton 3.6 and 3.9): decode tiles fit without spills over 8 warps (104 registers; 4 warps
    # spill 608 bytes on 3.6), prefill tiles of 16 keys over 8 warps (146), or 16 with the split partials (82;
    # 8 warps spill 280 bytes there, 16 warps spill 8 without splits).
    num_warps = (16 if split and block_r >= 64 else 8) if fp32_gpu else 4
    if split:
        part_acc = torch.empty((num_splits, n_tokens, num_q_heads, head_dim), device=q.device, dtype=torch.float32)
        part_ml = torch.empty((num_splits, n_tokens, num_q_heads, 2), device=q.device, dtype=torch.float32)
    else:
        part_acc = part_ml = out                              # unused
    grid = (batch * tiles, num_kv_heads, num_splits)
    _paged_attention_kernel[grid](
        q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, out, part_acc, part_ml,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), num_q_heads, n_tokens * num_q_heads, split_len, scale * 1.4426950408889634,
        tiles, GROUP=group, TOKENS=tokens, BLOCK_SIZE=block_size, HEAD_DIM=head_dim, BLOCK_R=block_r,
        BLOCK_N=block_n, BLOCK_D=block_d, SPLIT=split, IEEE=ieee, num_warps=num_warps, num_stages=2)
    if split:
        # Splits merged 8 at a time (a runtime loop: one compiled merge for any split count).
        _merge_splits_kernel[(n_tokens * num_q_heads,)](
            part_acc, part_ml, out, n_tokens * num_q_heads, num_q_heads, out.stride(0), out.stride(1), num_splits,
            BLOCK_S=8, HEAD_DIM=head_dim, BLOCK_D=block_d)
    return out
