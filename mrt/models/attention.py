"""Self-attention of one decoder layer, in the two modes of the model.

Projections (N, d) -> q (N, Hq, D), k, v (N, Hkv, D); Qwen3 applies an RMSNorm over D to each q and k head; then rope;
then, with `Hq = g * Hkv` (GQA: query head h reads key/value head h // g) and scale = D^-1/2:
- packed (`PackedMetadata`): causal attention within each packed sequence. flash-attn's varlen kernel on CUDA for
  fp16/bf16 when `import flash_attn` works; otherwise torch SDPA (its flash / memory-efficient kernels on a GPU, the
  fused CPU kernel here), which never builds an (N, N) mask: one call on the sequences right-padded to the longest
  when that at most doubles the tokens (exact: under a causal mask a real query sees only keys at or before it, all
  real), else one call per sequence;
- paged (`PagedMetadata`): the new K/V go into this layer's cache through the slot mapping (`store_kv`), then
  `paged_attention` reads the whole context (cached prefix + new tokens) from the block tables.
Output: o_proj of the (N, Hq * D) attention result.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention_metadata import PackedMetadata, PagedMetadata
from .config import ArchConfig
from .layers import RMSNorm, linear
from .rope import apply_rope


@functools.lru_cache(maxsize=None)
def _flash_attn_varlen():
    """flash_attn_varlen_func, or None where flash-attn does not import (its compiled module is missing on CPUs)."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # ImportError, or a build against another torch
        return None
    return flash_attn_varlen_func


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn: PackedMetadata,
                     spans: list[tuple[int, int]], scale: float) -> torch.Tensor:
    """q (N, Hq, D), k/v (N, Hkv, D) -> (N, Hq, D), causal within each span [start, end) of the packed batch."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        flash = _flash_attn_varlen()
        if flash is not None:
            cu = attn.cu_seqlens.to(device=q.device, dtype=torch.int32)
            return flash(q, k, v, cu, cu, attn.max_seqlen, attn.max_seqlen, softmax_scale=scale, causal=True)
    lens = [end - start for start, end in spans]
    if 1 < len(spans) and len(spans) * max(lens) <= 2 * sum(lens):
        return attention_padded(q, k, v, spans, scale)
    return attention_per_sequence(q, k, v, spans, scale)


def attention_per_sequence(q, k, v, spans: list[tuple[int, int]], scale: float) -> torch.Tensor:
    """packed_attention as one SDPA call per span."""
    gqa = q.shape[1] != k.shape[1]
    outs = []
    for start, end in spans:
        # (1, H, L, D) views of one sequence
        qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
        outs.append(o[0].transpose(0, 1))                   # (L, Hq, D)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


def attention_padded(q, k, v, spans: list[tuple[int, int]], scale: float) -> torch.Tensor:
    """packed_attention as one SDPA call on (B, H, Lmax, D), the spans right-padded with zeros.

    Token i of span b goes to row b * Lmax + i. Under the causal mask a real query at i reads keys 0..i of its own
    span, all real, so its output is exact; padded queries' outputs are dropped, and padded keys are read only by
    them, so they get zero gradient. Spans must be contiguous and in order (as PackedMetadata's are)."""
    n, B = q.shape[0], len(spans)
    lens = torch.tensor([end - start for start, end in spans], device=q.device)
    width = int(lens.max())
    starts = torch.tensor([start for start, _ in spans], device=q.device)
    # dst[t] = b * width + (t - start_b) for token t of span b
    shift = torch.arange(B, device=q.device) * width - starts
    dst = torch.arange(n, device=q.device) + torch.repeat_interleave(shift, lens, output_size=n)

    def pad(t):                                              # (N, H, D) -> (B, H, Lmax, D)
        out = t.new_zeros(B * width, *t.shape[1:]).index_copy(0, dst, t)
        return out.view(B, width, *t.shape[1:]).transpose(1, 2)
    o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True, scale=scale,
                                       enable_gqa=q.shape[1] != k.shape[1])
    return o.transpose(1, 2).reshape(B * width, *q.shape[1:]).index_select(0, dst)


class KVLayer(NamedTuple):
    """One layer's view of the paged KV cache."""
    k_cache: torch.Tensor       # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor
    check: bool                 # check the kernels' arguments here (the first layer does; the rest pass the same kinds)


def paged_attention_layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn: PagedMetadata,
                          kv: KVLayer, scale: float) -> torch.Tensor:
    """Store the new k/v (N, Hkv, D) in this layer's cache, then attend q (N, Hq, D) to each sequence's context."""
    from mrt_kernels.kv_cache import store_kv
    from mrt_kernels.paged_attention import paged_attention
    store_kv(k, v, kv.k_cache, kv.v_cache, attn.slot_mapping, check=kv.check)
    return paged_attention(q, kv.k_cache, kv.v_cache, attn.block_tables, attn.context_lens, attn.cu_seqlens_q,
                           attn.max_seqlen_q, attn.max_context_len, scale=scale, check=kv.check)


class Attention(nn.Module):
    def __init__(self, config: ArchConfig):
        super().__init__()
        d, hq, hkv, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = hq, hkv, hd
        self.scale = hd ** -0.5
        self.q_proj = nn.Linear(d, hq * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, hkv * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, hkv * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hq * hd, d, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps)
            self.k_norm = RMSNorm(hd, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: PackedMetadata | PagedMetadata,
                spans: list[tuple[int, int]] | None, kv_layer: KVLayer | None) -> torch.Tensor:
        n = x.shape[0]
        q = linear(x, self.q_proj).view(n, self.num_heads, self.head_dim)
        k = linear(x, self.k_proj).view(n, self.num_kv_heads, self.head_dim)
        v = linear(x, self.v_proj).view(n, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_layer is None:
            o = packed_attention(q, k, v, attn, spans, self.scale)
        else:
            o = paged_attention_layer(q, k, v, attn, kv_layer, self.scale)
        return linear(o.reshape(n, self.num_heads * self.head_dim), self.o_proj)
