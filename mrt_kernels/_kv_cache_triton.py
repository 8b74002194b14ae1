"""Triton backend of the KV-cache ops (the ops are defined by store_kv_ref / copy_blocks_ref in kv_cache.py).

Pure data movement, so there is no derivative to write down and every backend matches the reference bit for bit:
  store_kv:    one program per token n; the Hkv * D values of its key / value (any token and head strides, rows
               contiguous) go to the contiguous row of slot slot_mapping[n] of k_cache / v_cache.
  copy_blocks: one program per (pair i, plane, chunk), a plane being one (layer, K/V) of the contiguous
               (num_layers, 2, num_blocks, block_size, Hkv, D) cache; chunk c of block src[i] goes to block dst[i].
Importing this module needs Triton; mrt_kernels.kv_cache imports it only when the Triton backend runs.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, ks0, ks1, vs0, vs1,
                     HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK: tl.constexpr):
    # One program per token n: the HEADS * DIM values of its key/value go to the contiguous slot row.
    n = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + n).to(tl.int64)
    for start in range(0, HEADS * DIM, BLOCK):
        i = start + tl.arange(0, BLOCK)
        mask = i < HEADS * DIM
        h = i // DIM
        d = i % DIM
        k = tl.load(key_ptr + n * ks0 + h * ks1 + d, mask=mask)
        v = tl.load(value_ptr + n * vs0 + h * vs1 + d, mask=mask)
        tl.store(k_cache_ptr + slot * (HEADS * DIM) + i, k, mask=mask)
        tl.store(v_cache_ptr + slot * (HEADS * DIM) + i, v, mask=mask)


@triton.jit
def _copy_blocks_kernel(cache_ptr, src_ptr, dst_ptr, plane_elems, BLOCK_ELEMS: tl.constexpr,
                        BLOCK: tl.constexpr):
    # Grid (pairs, planes, chunks): plane p = (layer, K/V) of the contiguous cache; chunk c of block src[i]
    # goes to the same place of block dst[i].
    i = tl.program_id(0)
    p = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2)
    src = tl.load(src_ptr + i).to(tl.int64)
    dst = tl.load(dst_ptr + i).to(tl.int64)
    j = c * BLOCK + tl.arange(0, BLOCK)
    mask = j < BLOCK_ELEMS
    x = tl.load(cache_ptr + p * plane_elems + src * BLOCK_ELEMS + j, mask=mask)
    tl.store(cache_ptr + p * plane_elems + dst * BLOCK_ELEMS + j, x, mask=mask)


def store_kv_triton(key, value, k_cache, v_cache, slot_mapping) -> None:
    """store_kv on checked arguments (kv_cache._check_store_kv)."""
    heads, dim = key.shape[1], key.shape[2]
    if key.stride(2) != 1:
        key = key.contiguous()
    if value.stride(2) != 1:
        value = value.contiguous()
    if key.shape[0] == 0:
        return
    block = min(triton.next_power_of_2(heads * dim), 4096)
    _store_kv_kernel[(key.shape[0],)](key, value, k_cache, v_cache, slot_mapping, key.stride(0), key.stride(1),
                                      value.stride(0), value.stride(1), HEADS=heads, DIM=dim, BLOCK=block)


def copy_blocks_triton(kv_cache, src, dst) -> None:
    """copy_blocks on checked arguments (kv_cache._check_copy_blocks: src / dst on the cache's device)."""
    if src.numel() == 0:
        return
    block_elems = kv_cache[0, 0, 0].numel()
    block = min(triton.next_power_of_2(block_elems), 4096)
    grid = (src.numel(), kv_cache.shape[0] * 2, triton.cdiv(block_elems, block))
    _copy_blocks_kernel[grid](kv_cache, src, dst, kv_cache.stride(1), BLOCK_ELEMS=block_elems, BLOCK=block)
