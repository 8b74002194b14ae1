"""Fake (shape-only) kernels of every op mrt_kernels registers with the dispatcher, registered here, once.

Why fakes exist: torch.compile traces with FakeTensors (and meta tensors), which carry shape, dtype and device but no
data, so it cannot run a real kernel to learn what an op returns. A fake kernel answers that without computing
anything: new empty tensors of the output shapes and dtypes, or None for an op that only writes into its arguments.
Without one, an op cannot be traced; torch.library.opcheck (in the tests) checks each fake against the real kernel.

What is registered, when mrt_kernels is imported (its __init__ imports this module after the op modules):
- COMPILED: the ops of mrt_kernels._C (TORCH_LIBRARY in csrc/: C++ CPU, and CUDA where built), each only where the
  extension loads and has registered that op (an older build may lack one);
- PYTHON: the Triton kernels that fused_linear_logprobs wraps as torch.library.custom_op, always.
"""
from __future__ import annotations

import torch

from . import fused_linear_logprobs  # noqa: F401  (defines the custom ops of PYTHON)
from ._backend import extension_error


def _logprobs_fwd_fake(hidden, weight, targets, temperature, ignore_index, with_entropy, with_grad_hidden, chunk_size,
                       vocab_tile):
    # (logp (N,), lse (N,), entropy (N,) or (0,), d logp / d hidden (N, d) or (0,)), fp32.
    n, d = hidden.shape
    new = lambda *shape: hidden.new_empty(shape, dtype=torch.float32)  # noqa: E731
    return new(n), new(n), new(n if with_entropy else 0), (new(n, d) if with_grad_hidden else new(0))


def _logprobs_bwd_weight_fake(grad_logp, hidden, weight, targets, lse, temperature, ignore_index, chunk_size,
                              vocab_tile):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)  # grad_W (V, d)


def _store_kv_fake(key, value, k_cache, v_cache, slot_mapping):
    return None  # writes k_cache / v_cache in place


def _copy_blocks_fake(kv_cache, src, dst):
    return None  # writes kv_cache in place


def _paged_attention_fake(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                          max_context_len, scale):
    return q.new_empty(q.shape)  # (N, Hq, D) in q's dtype


def _progress_advantages_fake(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, order,
                              sorted_group_ids, num_tokens, alpha, mode, scale_by_std, eps):
    # (advantages (T,), progress (E,), regret (B,)), fp32.
    f32 = dict(dtype=torch.float32, device=J.device)
    return J.new_empty(num_tokens, **f32), J.new_empty(J.shape[0], **f32), J.new_empty(rewards.shape[0], **f32)


# torch.ops.mrt_kernels.<name> -> its fake.
COMPILED = {
    "fused_linear_logprobs_fwd": _logprobs_fwd_fake,
    "fused_linear_logprobs_bwd_weight": _logprobs_bwd_weight_fake,
    "store_kv": _store_kv_fake,
    "copy_blocks": _copy_blocks_fake,
    "paged_attention": _paged_attention_fake,
    "progress_advantages": _progress_advantages_fake,
}
PYTHON = {
    "fused_linear_logprobs_triton_fwd": _logprobs_fwd_fake,
    "fused_linear_logprobs_triton_bwd_weight": _logprobs_bwd_weight_fake,
}


def _register() -> None:
    compiled = extension_error() is None  # loads mrt_kernels._C where it can, which registers its ops
    for name, fake in COMPILED.items():
        if compiled and hasattr(torch.ops.mrt_kernels, name):
            torch.library.register_fake(f"mrt_kernels::{name}")(fake)
    for name, fake in PYTHON.items():
        torch.library.register_fake(f"mrt_kernels::{name}")(fake)


_register()
