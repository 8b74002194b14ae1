"""What one forward pass of the model needs to know about its attention: passed as an argument, never a global.

Two modes share one decoder:
- training / scoring: packed variable-length sequences with no KV cache (`PackedMetadata`);
- generation: sequences whose keys and values live in a paged KV cache (`PagedMetadata`), for prefill (with or
  without a cached prefix) and decode alike: the new tokens of sequence b are the last `q_len_b` positions of its
  `context_lens[b]` positions.

Shapes: N = new (query) tokens in the batch, B = sequences in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedMetadata:
    """Packed sequences without padding; sequence b is tokens cu_seqlens[b]:cu_seqlens[b+1], causal within itself."""
    cu_seqlens: torch.Tensor        # (B+1,) int32, starts at 0, ends at N
    max_seqlen: int


@dataclass
class PagedMetadata:
    """New tokens of B sequences against a paged KV cache.

    The cache of one layer is k_cache / v_cache of shape (num_blocks, block_size, num_kv_heads, head_dim).
    Token position p of sequence b lives in block block_tables[b, p // block_size], slot p % block_size.
    """
    cu_seqlens_q: torch.Tensor      # (B+1,) int32: new tokens of sequence b are cu_seqlens_q[b]:cu_seqlens_q[b+1]
    context_lens: torch.Tensor      # (B,) int32: cached + new tokens of sequence b (keys attended to)
    block_tables: torch.Tensor      # (B, max_blocks) int32: padded with 0 beyond a sequence's blocks (never read)
    slot_mapping: torch.Tensor      # (N,) int64: cache slot (block * block_size + offset) for each new token's K/V
    max_seqlen_q: int
    max_context_len: int
    block_size: int
