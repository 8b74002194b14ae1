"""KV-cache ops of the rollout engine: store new keys/values through a slot mapping, and copy whole blocks.

The cache of one layer is k_cache / v_cache of shape (num_blocks, block_size, Hkv, D); slot s is block
s // block_size, offset s % block_size, i.e. row s of k_cache.view(-1, Hkv, D). The engine holds every layer in one
tensor kv_cache (num_layers, 2, num_blocks, block_size, Hkv, D); copy_blocks works on that whole tensor, so one call
copies a block in every layer, K and V (the copy-on-write of a shared, partly filled block when a branch forks).

Both ops write in place, move bits without arithmetic (so every backend must match the reference exactly) and have no
gradient (generation only): there is no autograd.Function. Backends: "cuda" (csrc/kv_cache_kernels.cu, glue in
csrc/kv_cache_cuda.cpp), "triton" (_kv_cache_triton.py), "cpp" (csrc/kv_cache.cpp), "reference".
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._backend import select_backend

__all__ = ["store_kv", "copy_blocks", "store_kv_ref", "copy_blocks_ref"]


# ---------------------------------------------------------------------------------------------------------------------
# References: the definitions.

def store_kv_ref(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
    """k_cache.view(-1, Hkv, D)[slot_mapping[n]] = key[n], and the same for values."""
    heads, dim = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, heads, dim)[slot_mapping] = key
    v_cache.view(-1, heads, dim)[slot_mapping] = value


def copy_blocks_ref(kv_cache: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """kv_cache[:, :, dst[i]] = kv_cache[:, :, src[i]] for every i (every layer, K and V)."""
    kv_cache[:, :, dst] = kv_cache[:, :, src]


# ---------------------------------------------------------------------------------------------------------------------
# Kernels: torch.ops.mrt_kernels.store_kv / copy_blocks (csrc/, C++ CPU and CUDA) and _kv_cache_triton.py (imported
# lazily: it needs Triton).

def _store_kv_triton(key, value, k_cache, v_cache, slot_mapping) -> None:
    from ._kv_cache_triton import store_kv_triton
    store_kv_triton(key, value, k_cache, v_cache, slot_mapping)


def _copy_blocks_triton(kv_cache, src, dst) -> None:
    from ._kv_cache_triton import copy_blocks_triton
    copy_blocks_triton(kv_cache, src, dst)


# ---------------------------------------------------------------------------------------------------------------------
# Launchers: check every argument, raise ValueError naming it.

def _check_store_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    named = dict(key=key, value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"store_kv: {name} must be a tensor, got {type(t).__name__}")
    if key.dim() != 3:
        raise ValueError(f"store_kv: key must be (N, Hkv, D), got shape {tuple(key.shape)}")
    if value.shape != key.shape:
        raise ValueError(f"store_kv: value shape {tuple(value.shape)} differs from key shape {tuple(key.shape)}")
    if k_cache.dim() != 4 or tuple(k_cache.shape[2:]) != tuple(key.shape[1:]):
        raise ValueError(f"store_kv: k_cache must be (num_blocks, block_size, {key.shape[1]}, {key.shape[2]}), "
                         f"got shape {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"store_kv: v_cache shape {tuple(v_cache.shape)} differs from k_cache {tuple(k_cache.shape)}")
    for name in ("k_cache", "v_cache"):
        if not named[name].is_contiguous():
            raise ValueError(f"store_kv: {name} must be contiguous")
    for name in ("key", "value", "v_cache"):
        if named[name].dtype != k_cache.dtype:
            raise ValueError(f"store_kv: {name} dtype {named[name].dtype} differs from k_cache dtype {k_cache.dtype}")
    for name, t in named.items():
        if t.device != k_cache.device:
            raise ValueError(f"store_kv: {name} is on {t.device}, k_cache on {k_cache.device}")
    if slot_mapping.dtype != torch.int64 or slot_mapping.shape != (key.shape[0],):
        raise ValueError(f"store_kv: slot_mapping must be ({key.shape[0]},) int64, got {tuple(slot_mapping.shape)} "
                         f"{slot_mapping.dtype}")
    # Range check on the CPU only: on a GPU it would cost a device sync per step; the engine guarantees it there.
    if slot_mapping.device.type == "cpu" and slot_mapping.numel():
        num_slots = k_cache.shape[0] * k_cache.shape[1]
        bad = (slot_mapping < 0) | (slot_mapping >= num_slots)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"store_kv: slot_mapping[{i}] = {int(slot_mapping[i])} is outside [0, {num_slots})")


def _as_index(x, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.int64 or x.dim() != 1:
            raise ValueError(f"copy_blocks: {name} must be a 1-d int64 tensor, got {tuple(x.shape)} {x.dtype}")
        return x
    try:
        return torch.tensor(list(x), dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"copy_blocks: {name} must be a 1-d int64 tensor or a list of ints ({exc})") from None


def _check_copy_blocks(kv_cache, src, dst) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(kv_cache, torch.Tensor) or kv_cache.dim() != 6 or kv_cache.shape[1] != 2:
        shape = tuple(kv_cache.shape) if isinstance(kv_cache, torch.Tensor) else type(kv_cache).__name__
        raise ValueError(f"copy_blocks: kv_cache must be (num_layers, 2, num_blocks, block_size, Hkv, D), got {shape}")
    if not kv_cache.is_contiguous():
        raise ValueError("copy_blocks: kv_cache must be contiguous")
    src = _as_index(src, "src", kv_cache.device)
    dst = _as_index(dst, "dst", kv_cache.device)
    if src.shape != dst.shape:
        raise ValueError(f"copy_blocks: src has {src.numel()} blocks, dst {dst.numel()}")
    num_blocks = kv_cache.shape[2]
    # Value checks where the indices are on the CPU (the usual case: the block manager builds them there).
    for name, t in (("src", src), ("dst", dst)):
        if t.device.type == "cpu" and t.numel():
            bad = (t < 0) | (t >= num_blocks)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"copy_blocks: {name}[{i}] = {int(t[i])} is outside [0, {num_blocks})")
    if src.device.type == "cpu" and dst.device.type == "cpu" and dst.numel():
        # The copies run in parallel: a block written twice, or written and read, would race.
        if torch.unique(dst).numel() != dst.numel():
            raise ValueError(f"copy_blocks: dst repeats a block ({dst.tolist()})")
        if bool(torch.isin(dst, src).any()):
            raise ValueError(f"copy_blocks: dst and src share a block (src {src.tolist()}, dst {dst.tolist()})")
    if src.device != kv_cache.device:
        src = src.to(kv_cache.device, non_blocking=True)
    if dst.device != kv_cache.device:
        dst = dst.to(kv_cache.device, non_blocking=True)
    return src, dst


# ---------------------------------------------------------------------------------------------------------------------
# Public functions.

def store_kv(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor, *, backend: str | None = None, check: bool = True) -> None:
    """Write token n's key/value (N, Hkv, D) into cache slot slot_mapping[n] of k_cache / v_cache, in place.

    k_cache / v_cache: (num_blocks, block_size, Hkv, D), contiguous, the dtype of key; slot_mapping: (N,) int64 with
    every slot valid and distinct. key/value may be strided views (e.g. of a fused qkv projection).
    check=False skips the argument checks (the C++ and CUDA kernels still guard their memory accesses): for a caller
    that stores arguments of the same kinds layer after layer and had the first call check them.
    """
    if check:
        _check_store_kv(key, value, k_cache, v_cache, slot_mapping)
    which = select_backend("store_kv", k_cache.device, backend, cpp_op="store_kv", cuda_op="store_kv",
                           triton_ok=True)
    if which == "reference":
        store_kv_ref(key, value, k_cache, v_cache, slot_mapping)
    elif which == "triton":
        _store_kv_triton(key, value, k_cache, v_cache, slot_mapping)
    else:  # cpp, cuda: the dispatcher picks the kernel from the device
        torch.ops.mrt_kernels.store_kv(key, value, k_cache, v_cache, slot_mapping)


def copy_blocks(kv_cache: torch.Tensor, src: torch.Tensor | Sequence[int], dst: torch.Tensor | Sequence[int], *,
                backend: str | None = None) -> None:
    """For every layer and K/V plane of kv_cache (num_layers, 2, num_blocks, block_size, Hkv, D): block dst[i] <-
    block src[i], in place. dst blocks are distinct and none is also a src (a src may repeat: one shared block
    copied for several branches). src / dst: 1-d int64 tensors (CPU or the cache's device) or lists of ints.
    """
    src, dst = _check_copy_blocks(kv_cache, src, dst)
    which = select_backend("copy_blocks", kv_cache.device, backend, cpp_op="copy_blocks", cuda_op="copy_blocks",
                           triton_ok=True)
    if which == "reference":
        copy_blocks_ref(kv_cache, src, dst)
    elif which == "triton":
        _copy_blocks_triton(kv_cache, src, dst)
    else:
        torch.ops.mrt_kernels.copy_blocks(kv_cache, src, dst)

