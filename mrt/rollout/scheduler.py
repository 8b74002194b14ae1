"""Continuous batching under a token budget, with preemption by recompute when blocks run out.

Each step the scheduler picks, for every sequence it runs, how many of its uncomputed tokens go through the model:
all of them for a decode (one token) or a prefill, or a chunk of a long prefill that does not fit the budget
(chunked prefill: the sequence is sampled only when its last token is computed). Order is first come, first served:
1. running sequences (they hold blocks) in arrival order; when one needs a block and none is free, the most recent
   running sequence not yet scheduled this step is preempted (its blocks are freed and it goes back to the head of
   the waiting queue, to be recomputed, largely from the prefix cache), and as a last resort the sequence itself;
2. then waiting sequences, each first matched against the prefix cache, while budget, blocks and the sequence cap
   allow (none jumps the queue: admission stops at the first that does not fit).
A sequence that cannot fit even in an empty cache raises: it would never run.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """One step: sequences with the number of their tokens to compute, and block copies to run first."""
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    num_preempted: int = 0

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class Scheduler:
    def __init__(self, block_manager: BlockManager, *, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # ---- queue --------------------------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """A new sequence (holding no blocks) joins the waiting queue."""
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A sequence that already holds blocks (a fork) joins the running set."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.bm.free(seq)
        self.running.remove(seq)

    # ---- one step -----------------------------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        """Plan one step. The caller runs batch.copies, then calls `bm.copies_done()`, before the next schedule."""
        if self.bm.has_pending_copies:
            raise RuntimeError("schedule: the last step's block copies were not marked done (bm.copies_done())")
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens

        i = 0
        while i < len(self.running) and budget > 0 and len(batch) < self.max_num_seqs:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            need = self.bm.blocks_needed(seq, n)             # preempting others leaves it unchanged
            while need > self.bm.num_free_blocks:
                victim = self._last_unscheduled(after=i)
                if victim is None:
                    break
                self._preempt(victim)
                batch.num_preempted += 1
            if need > self.bm.num_free_blocks:
                if not batch.seqs and len(self.running) == 1:
                    self._raise_too_long(seq)
                self._preempt(seq)
                batch.num_preempted += 1
                continue  # running[i] is now the next sequence
            batch.copies += self.bm.reserve(seq, n)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
            i += 1

        # After a preemption the cache is short: admitting now would only preempt again.
        # A waiting sequence whose next prompt block is being computed this step by another one just admitted waits
        # one step, then takes it from the prefix cache (the same prompt sent G times is computed once).
        pending: set[bytes] = set()
        deferred: list[Sequence] = []
        while self.waiting and budget > 0 and len(batch) < self.max_num_seqs and not batch.num_preempted:
            seq = self.waiting[0]
            hit_ids, hit_hashes = self.bm.match_prefix(seq.token_ids)
            if pending and set(self.bm.prompt_block_hashes(seq.token_ids, hit_hashes, limit=1)) & pending:
                deferred.append(self.waiting.popleft())
                continue
            cached = len(hit_ids) * self.bm.block_size
            n = min(len(seq) - cached, budget)
            free_after = self.bm.num_free_after_taking(hit_ids)
            need = self.bm.blocks_for(cached + n) - len(hit_ids)
            if need > free_after:
                if not self.running and not batch.seqs and need > self.bm.num_blocks - len(hit_ids):
                    self._raise_too_long(seq)
                break
            self.waiting.popleft()
            self.bm.take_prefix(seq, hit_ids, hit_hashes)
            if not seq.admitted:
                seq.admitted = True
                seq.num_cached_tokens = cached
            batch.copies += self.bm.reserve(seq, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
            if self.bm.enable_prefix_caching:
                computed_blocks = (cached + n) // self.bm.block_size - len(hit_ids)
                pending.update(self.bm.prompt_block_hashes(seq.token_ids, hit_hashes, limit=computed_blocks))
        self.waiting.extendleft(reversed(deferred))
        self.num_preemptions += batch.num_preempted
        return batch

    def _last_unscheduled(self, after: int) -> Sequence | None:
        """The most recent running sequence after index `after` (those before it are scheduled this step)."""
        return self.running[-1] if len(self.running) > after + 1 else None

    def _preempt(self, seq: Sequence) -> None:
        self.bm.free(seq)
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def _raise_too_long(self, seq: Sequence) -> None:
        raise RuntimeError(f"sequence {seq.seq_id} ({len(seq)} tokens) does not fit in the whole KV cache "
                           f"({self.bm.num_blocks} blocks of {self.bm.block_size}); give the engine more blocks")
