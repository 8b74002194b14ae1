"""Decode steps over static input buffers, replayed as CUDA graphs per batch-size bucket.

Why: a decode step of a 1.5B model at a rollout's batch launches ~15 kernels a layer (projections, norms, rope,
store_kv, paged attention and its split merge, the MLP): ~400 launches of a few microseconds each on the host, against
~1 ms for the GPU to stream the 3 GB of bf16 weights once. A CUDA graph records the step's launches once and replays
them with one host call.

A graph replays fixed addresses and fixed launch shapes, so:
- the step's inputs live in static buffers, allocated once for the largest bucket and written before each replay:
  input_ids, positions, slot_mapping (Bmax,) int64; context_lens (Bmax,) int32; block_tables (Bmax, W) int32 with
  W = ceil(max_model_len / block_size), the widest table any sequence can have; cu_seqlens_q = 0, 1, .., Bmax (one
  new token per sequence, never rewritten);
- a batch of B sequences runs in the smallest bucket >= B (1, 2, 4, 8, then multiples of 16 up to max_num_seqs);
  rows B .. bucket-1 are padding: token 0 at position 0 with a context of one token in a scratch block, the KV
  cache's spare last block that the block manager never hands out (the runner allocates it). Their store_kv writes
  land there and nowhere else, and their outputs are dropped;
- max_context_len, which sizes the Triton kernel's split-KV grid on the host, is W * block_size for every step: the
  kernel reads each sequence's true length from context_lens on the device, so splits past it do no work;
- a graph holds the KV cache's and the weights' addresses: when either moves (a growing cache reallocated, weights
  loaded with assign) every graph is dropped and recaptured on its next use.
Graphs are captured lazily, on the first step that needs a bucket: one eager warm-up run (Triton compiles there, and
it writes the step's own K/V), then the capture, in one memory pool that all buckets share (their replays never
overlap, and each bucket's output buffer stays referenced).

With capture=False (every device but CUDA) the same buffers and metadata run eagerly each step on the B rows alone
(pad=False: a CPU matrix product's rounding can depend on its row count, and this path must give the tokens and
log-probs of the engine's plain path bit for bit); pad=True pads there too, which the tests use to check padding.
Only steps where every sequence has exactly one new token and B <= the largest bucket take this path; prefill,
chunked prefill and the fork continuations run eagerly as before.
"""
from __future__ import annotations

import torch

from mrt.models.attention_metadata import PagedMetadata

# Buckets: every size up to 8 would cost a graph each for little gain; past 16, steps of 16 keep the padding under
# 16 rows (at most ~6% of a 256-row batch's work) with max_num_seqs / 16 graphs.
SMALL_BUCKETS = (1, 2, 4, 8)
BUCKET_STEP = 16


def bucket_sizes(max_batch: int) -> list[int]:
    """The batch sizes that get a graph, ascending; the last is >= max_batch."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = [b for b in SMALL_BUCKETS if b < max_batch]
    sizes += list(range(BUCKET_STEP, max_batch + BUCKET_STEP, BUCKET_STEP)) if max_batch > SMALL_BUCKETS[-1] else \
        [next(b for b in SMALL_BUCKETS if b >= max_batch)]
    return sorted(set(sizes))


class DecodeGraphs:
    """Static decode buffers for up to `max_batch` sequences, and one CUDA graph per bucket when capture is True.

    model: the CausalLM; block_size, max_model_len: the engine's (they fix the block-table width W).
    """

    def __init__(self, model, *, max_batch: int, block_size: int, max_model_len: int, capture: bool,
                 pad: bool | None = None):
        if capture and model.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {model.device}")
        self.model = model
        self.capture = capture
        self.pad = capture if pad is None else pad
        self.block_size = block_size
        self.buckets = bucket_sizes(max_batch)
        self.width = -(-max_model_len // block_size)                 # W: blocks of the longest sequence
        self.max_context_len = self.width * block_size
        n, dev = self.buckets[-1], model.device
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(n, dtype=torch.int64, device=dev)
        self.slot_mapping = torch.zeros(n, dtype=torch.int64, device=dev)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros(n, self.width, dtype=torch.int32, device=dev)
        self.cu_seqlens_q = torch.arange(n + 1, dtype=torch.int32, device=dev)
        # Host staging in pinned memory on a GPU, so the step's inputs go over in copies that do not wait for the
        # device (the engine's sampler syncs once a step, before the next step refills them).
        pin = dev.type == "cuda"
        self._host = torch.zeros(4, n, dtype=torch.int64, pin_memory=pin)     # ids, positions, slots, context_lens
        self._host_tables = torch.zeros(n, self.width, dtype=torch.int32, pin_memory=pin)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}                   # bucket -> its graph's (bucket, d) hidden states
        self.pool = None
        self._captured_for: tuple | None = None                      # the addresses the graphs hold
        self.captures = 0                                            # graphs captured so far (tests, benchmarks)
        self.steps = 0                                               # steps run here
        self.padded_rows = 0                                         # padding rows run
        self.invalidations = 0                                       # times the graphs were dropped (cache moved)

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def fits(self, num_tokens: list[int], table_width: int) -> bool:
        """Whether a step with these per-sequence token counts and widest block table runs here."""
        return len(num_tokens) <= self.max_batch and table_width <= self.width and all(n == 1 for n in num_tokens)

    def bucket(self, batch: int) -> int:
        return next(b for b in self.buckets if b >= batch)

    # ---- one step -----------------------------------------------------------------------------------------------
    def run(self, ids: list[int], positions: list[int], slots: list[int], context_lens: list[int],
            tables: list[list[int]], kv_cache: torch.Tensor, scratch_block: int) -> torch.Tensor:
        """Hidden states (B, d) of the B one-token sequences: buffers filled, then the bucket's graph replayed (or,
        without capture, the model run on the buffers). scratch_block: a block of kv_cache that no sequence uses."""
        batch = len(ids)
        size = self.bucket(batch) if self.pad else batch
        self._fill(ids, positions, slots, context_lens, tables, size, scratch_block)
        self.steps += 1
        self.padded_rows += size - batch
        if not self.capture:
            return self._forward(size, kv_cache)[:batch]
        self._drop_if_moved(kv_cache)
        if size not in self.graphs:
            self._capture(size, kv_cache)
        self.graphs[size].replay()
        return self.outputs[size][:batch]

    def _fill(self, ids, positions, slots, context_lens, tables, size: int, scratch_block: int) -> None:
        """Rows 0..B-1 from the step; rows B..size-1 padding in the scratch block (the module docstring says why)."""
        pad = size - len(ids)
        if pad:
            ids, positions = ids + [0] * pad, positions + [0] * pad
            slots, context_lens = slots + [scratch_block * self.block_size] * pad, context_lens + [1] * pad
        host = self._host[:, :size]
        host.copy_(torch.tensor([ids, positions, slots, context_lens], dtype=torch.int64))     # (4, size)
        self.input_ids[:size].copy_(host[0], non_blocking=True)
        self.positions[:size].copy_(host[1], non_blocking=True)
        self.slot_mapping[:size].copy_(host[2], non_blocking=True)
        self.context_lens[:size].copy_(host[3], non_blocking=True)                           # int64 -> int32
        width = max(len(t) for t in tables)
        tab = self._host_tables[:size, :width]
        tab.copy_(torch.tensor([t + [0] * (width - len(t)) for t in tables] + [[scratch_block] * width] * pad,
                               dtype=torch.int32))                                           # (size, width)
        # Columns past `width` keep older entries: the kernels read only a sequence's first ceil(ctx / block_size).
        self.block_tables[:size, :width].copy_(tab, non_blocking=True)

    def _metadata(self, size: int) -> PagedMetadata:
        return PagedMetadata(cu_seqlens_q=self.cu_seqlens_q[:size + 1], context_lens=self.context_lens[:size],
                             block_tables=self.block_tables[:size], slot_mapping=self.slot_mapping[:size],
                             max_seqlen_q=1, max_context_len=self.max_context_len, block_size=self.block_size)

    def _forward(self, size: int, kv_cache: torch.Tensor) -> torch.Tensor:
        return self.model(self.input_ids[:size], self.positions[:size], self._metadata(size), kv_cache, check=False)

    # ---- graphs -------------------------------------------------------------------------------------------------
    def _addresses(self, kv_cache: torch.Tensor) -> tuple:
        return (kv_cache.data_ptr(), tuple(p.data_ptr() for p in self.model.parameters()))

    def _drop_if_moved(self, kv_cache: torch.Tensor) -> None:
        now = self._addresses(kv_cache)
        if now != self._captured_for:
            self.invalidations += bool(self.graphs)
            self.graphs.clear()
            self.outputs.clear()
            self._captured_for = now

    def _capture(self, size: int, kv_cache: torch.Tensor) -> None:
        """Warm up once eagerly on a side stream (compiles Triton kernels; writes this step's K/V), then capture.
        The buffers already hold this step's inputs, so the replay that follows computes this step."""
        side = torch.cuda.Stream(device=kv_cache.device)
        side.wait_stream(torch.cuda.current_stream(kv_cache.device))
        with torch.cuda.stream(side):
            self._forward(size, kv_cache)
        torch.cuda.current_stream(kv_cache.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._forward(size, kv_cache)
        self.pool = graph.pool()
        self.graphs[size] = graph
        self.outputs[size] = out
        self.captures += 1

    def clear(self) -> None:
        """Drop every graph (their memory returns to the pool's owner when the graphs are freed)."""
        self.graphs.clear()
        self.outputs.clear()
        self._captured_for = None
