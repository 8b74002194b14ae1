"""Model runner: owns the KV cache, turns a scheduled batch into model inputs, runs the model, returns logits.

Inputs of one step, for B scheduled sequences where sequence b computes its tokens [c_b, c_b + n_b):
  input_ids, positions (N,) with N = sum n_b; positions c_b .. c_b + n_b - 1 (a token's position is its index);
  PagedMetadata: cu_seqlens_q (B+1,), context_lens c_b + n_b (B,), block_tables (B, max_blocks) padded with 0,
  slot_mapping (N,) = block_table[p // block_size] * block_size + p % block_size for each new position p.
Copy-on-write block copies planned by the block manager run (for every layer, K and V) before the forward writes.
Logits are computed only for the last token of each sequence that has no uncomputed token left after the step.
The KV cache is one tensor (num_layers, 2, capacity, block_size, Hkv, D) in the model's dtype and device. With
`grow=True` (the engine's choice on the CPU, where RAM is shared with everything else) it starts at
`initial_blocks` and is reallocated, at least doubling, when the block manager hands out a block id beyond it, up
to num_blocks: memory follows what the run uses, and the copies total less than the final size. On a GPU it is
allocated whole up front (capacity = num_blocks).
Decode steps (one new token per sequence) run through cuda_graphs.DecodeGraphs when `cuda_graphs` is on: static
buffers replayed as CUDA graphs per batch-size bucket on a GPU, the same buffers run eagerly elsewhere.
"""
from __future__ import annotations

import torch

from mrt.models.attention_metadata import PagedMetadata

from .scheduler import ScheduledBatch


def kv_cache_bytes_per_block(config, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return config.num_layers * 2 * block_size * config.num_kv_heads * config.head_dim * elem


# A growing pool's first size: 64 blocks of 16 tokens hold a 1k-token sequence, tens of MB at a 1B model's shape.
INITIAL_BLOCKS = 64


class ModelRunner:
    def __init__(self, model, num_blocks: int, block_size: int, *, grow: bool = False,
                 initial_blocks: int = INITIAL_BLOCKS, cuda_graphs: bool = False, max_num_seqs: int = 256,
                 max_model_len: int | None = None):
        """cuda_graphs: run decode steps on static buffers (cuda_graphs.DecodeGraphs), replayed as CUDA graphs per
        batch-size bucket when the model is on a CUDA device, run eagerly elsewhere; max_num_seqs and max_model_len
        (default: the model's context) size those buffers."""
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks              # the most the pool may hold
        # With decode graphs the cache holds one spare block past the pool, the padding rows' scratch (its id is
        # always the tensor's last block: the block manager hands out ids below num_blocks <= capacity).
        self.spare = 1 if cuda_graphs else 0
        blocks = min(num_blocks, initial_blocks) if grow else num_blocks
        self.kv_cache = model.new_kv_cache(blocks + self.spare, block_size)
        self.graphs = None
        if cuda_graphs:
            from .cuda_graphs import DecodeGraphs
            self.graphs = DecodeGraphs(model, max_batch=max_num_seqs, block_size=block_size,
                                       max_model_len=max_model_len or model.config.max_position_embeddings,
                                       capture=model.device.type == "cuda")

    @property
    def device(self) -> torch.device:
        return self.kv_cache.device

    @property
    def capacity(self) -> int:
        """Blocks of the pool the KV-cache tensor holds now (the spare block not counted)."""
        return self.kv_cache.shape[2] - self.spare

    def ensure_blocks(self, n: int) -> None:
        """Make block ids 0 .. n-1 exist: reallocate to max(n, 2 x capacity) blocks (at most num_blocks), keeping
        the cached K/V."""
        cap = self.capacity
        if n <= cap:
            return
        if n > self.num_blocks:
            raise ValueError(f"ensure_blocks({n}): the pool holds at most {self.num_blocks} blocks")
        grown = self.model.new_kv_cache(min(self.num_blocks, max(n, 2 * cap)) + self.spare, self.block_size)
        grown[:, :, :cap].copy_(self.kv_cache[:, :, :cap])
        self.kv_cache = grown

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, PagedMetadata, list[int]]:
        """(input_ids, positions, metadata, rows): rows[i] is the token row to sample for batch sequence i, or -1."""
        ids, pos, slots, rows, ctx, tables, cu = self._step_lists(batch)
        width = max(len(t) for t in tables)
        dev = self.device
        meta = PagedMetadata(
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=dev),
            context_lens=torch.tensor(ctx, dtype=torch.int32, device=dev),
            block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=dev),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            max_seqlen_q=max(batch.num_tokens),
            max_context_len=max(ctx),
            block_size=self.block_size,
        )
        return (torch.tensor(ids, dtype=torch.int64, device=dev), torch.tensor(pos, dtype=torch.int64, device=dev),
                meta, rows)

    def _step_lists(self, batch: ScheduledBatch):
        """The step's inputs as plain lists (ids, positions, slots, rows, context_lens, block tables, cu_seqlens_q):
        a step is mostly one-token rows, where per-row numpy or tensor calls cost more than the arithmetic."""
        bs = self.block_size
        ids, pos, slots, rows, ctx, tables = [], [], [], [], [], []
        cu = [0]
        for seq, n in zip(batch.seqs, batch.num_tokens):
            c = seq.num_computed_tokens
            table = seq.block_table
            if n == 1:
                ids.append(seq.token_ids[c])
                pos.append(c)
                slots.append(table[c // bs] * bs + c % bs)
            else:
                ids.extend(seq.token_ids[c:c + n])
                pos.extend(range(c, c + n))
                slots.extend(table[p // bs] * bs + p % bs for p in range(c, c + n))
            cu.append(cu[-1] + n)
            ctx.append(c + n)
            rows.append(cu[-1] - 1 if c + n == len(seq) else -1)
            tables.append(table)
        return ids, pos, slots, rows, ctx, tables, cu

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if not copies:
            return
        from mrt_kernels.kv_cache import copy_blocks
        src = torch.tensor([s for s, _ in copies], dtype=torch.int64, device=self.device)
        dst = torch.tensor([d for _, d in copies], dtype=torch.int64, device=self.device)
        copy_blocks(self.kv_cache, src, dst)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor | None, list[int]]:
        """Run one step. Returns (logits (S, V) fp32 of the S sequences to sample, their indices in the batch)."""
        self.copy_blocks(batch.copies)
        if self.graphs is not None and self.graphs.fits(batch.num_tokens, max(len(s.block_table) for s in batch.seqs)):
            ids, pos, slots, rows, ctx, tables, _ = self._step_lists(batch)
            hidden = self.graphs.run(ids, pos, slots, ctx, tables, self.kv_cache,
                                     scratch_block=self.kv_cache.shape[2] - 1)          # (B, d): one token each
        else:
            input_ids, positions, meta, rows = self.prepare(batch)
            hidden = self.model(input_ids, positions, meta, self.kv_cache, check=False)  # (N, d); meta is ours
        which = [i for i, r in enumerate(rows) if r >= 0]
        if not which:
            return None, []
        idx = torch.tensor([rows[i] for i in which], dtype=torch.int64, device=hidden.device)
        return self.model.compute_logits(hidden.index_select(0, idx)), which
