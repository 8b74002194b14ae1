"""Continuous batching under a token budget, with preemption by recompute when blocks run out.

Each step the scheduler picks, for every sequence it runs, how many of its uncomputed tokens go through the model:
all of them for a decode (one token) or a prefill, or a chunk of a long prefill that does not fit the budget
(chunked prefill: the sequence is sampled only when its last token is computed). Order is first come, first served:
1. running sequences (`_schedule_running`; they hold blocks) in arrival order; when one needs a block and none is
   free, the most recent running sequence not yet scheduled this step is preempted (its blocks are freed and it goes
   back to the head of the waiting queue, to be recomputed, largely from the prefix cache), and as a last resort
   the sequence itself;
2. then waiting sequences (`_schedule_waiting`, not in a step that preempted: the cache is short), each first matched
   against the prefix cache, while budget, blocks and the sequence cap allow (none jumps the queue: admission stops
   at the first that does not fit).
The batch counts the sequences preempted while it was planned (`num_preempted`); the engine sums them per call.
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
    num_preempted: int = 0             # sequences preempted while planning it (the engine counts them per call)

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
        budget = self._schedule_running(batch)
        if not batch.num_preempted:     # after a preemption the cache is short: admitting now would only preempt again
            self._schedule_waiting(batch, budget)
        return batch

    def _schedule_running(self, batch: ScheduledBatch) -> int:
        """Running sequences in arrival order, preempting for blocks as needed -> the token budget left."""
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0 and len(batch) < self.max_num_seqs:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            if not self._make_room(batch, i, n):
                continue  # running[i] was preempted: it is now the next sequence
            self._add(batch, seq, n)
            budget -= n
            i += 1
        return budget

    def _make_room(self, batch: ScheduledBatch, i: int, n: int) -> bool:
        """Free blocks for n more tokens of running[i] by preempting the newest running sequences not yet scheduled,
        or as a last resort running[i] itself (-> False)."""
        seq = self.running[i]
        need = self.bm.blocks_needed(seq, n)             # preempting others leaves it unchanged
        while need > self.bm.num_free_blocks:
            victim = self._last_unscheduled(after=i)
            if victim is None:
                break
            self._preempt(victim, batch)
        if need <= self.bm.num_free_blocks:
            return True
        if not batch.seqs and len(self.running) == 1:
            self._raise_too_long(seq)
        self._preempt(seq, batch)
        return False

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int) -> None:
        """Admit waiting sequences in order while budget, blocks and the sequence cap allow.

        A waiting sequence whose next prompt block is being computed this step by another one just admitted waits
        one step, then takes it from the prefix cache (the same prompt sent G times is computed once)."""
        pending: set[bytes] = set()
        deferred: list[Sequence] = []
        while self.waiting and budget > 0 and len(batch) < self.max_num_seqs:
            seq = self.waiting[0]
            hit_ids, hit_hashes = self.bm.match_prefix(seq.token_ids)
            if pending and set(self.bm.prompt_block_hashes(seq.token_ids, hit_hashes, limit=1)) & pending:
                deferred.append(self.waiting.popleft())
                continue
            n = self._admit(batch, hit_ids, hit_hashes, budget)
            if n is None:
                break
            budget -= n
            if self.bm.enable_prefix_caching:
                computed_blocks = (len(hit_ids) * self.bm.block_size + n) // self.bm.block_size - len(hit_ids)
                pending.update(self.bm.prompt_block_hashes(seq.token_ids, hit_hashes, limit=computed_blocks))
        self.waiting.extendleft(reversed(deferred))

    def _admit(self, batch: ScheduledBatch, hit_ids: list[int], hit_hashes: list[bytes], budget: int) -> int | None:
        """Move the head of the waiting queue to running, on its cached prefix (hit_ids), with up to `budget` tokens
        to compute this step -> how many; None (and it stays at the head) when their blocks do not fit."""
        seq = self.waiting[0]
        cached = len(hit_ids) * self.bm.block_size
        n = min(len(seq) - cached, budget)
        need = self.bm.blocks_for(cached + n) - len(hit_ids)
        if need > self.bm.num_free_after_taking(hit_ids):
            if not self.running and not batch.seqs and need > self.bm.num_blocks - len(hit_ids):
                self._raise_too_long(seq)
            return None
        self.waiting.popleft()
        self.bm.take_prefix(seq, hit_ids, hit_hashes)
        if not seq.admitted:
            seq.admitted = True
            seq.num_cached_tokens = cached
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        self._add(batch, seq, n)
        return n

    def _add(self, batch: ScheduledBatch, seq: Sequence, n: int) -> None:
        """n tokens of seq go through the model this step: reserve their slots (and any copy-on-write)."""
        batch.copies += self.bm.reserve(seq, n)
        batch.seqs.append(seq)
        batch.num_tokens.append(n)

    def _last_unscheduled(self, after: int) -> Sequence | None:
        """The most recent running sequence after index `after` (those before it are scheduled this step)."""
        return self.running[-1] if len(self.running) > after + 1 else None

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        """Free seq's blocks and put it back at the head of the waiting queue (to be recomputed); count it."""
        self.bm.free(seq)
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        batch.num_preempted += 1

    def _raise_too_long(self, seq: Sequence) -> None:
        raise RuntimeError(f"sequence {seq.seq_id} ({len(seq)} tokens) does not fit in the whole KV cache "
                           f"({self.bm.num_blocks} blocks of {self.bm.block_size}); give the engine more blocks")
