"""Paged KV-cache blocks: reference counts, a hash-chained prefix cache, copy-on-write, LRU eviction.

The cache is `num_blocks` blocks of `block_size` token slots. A sequence's block_table lists the blocks holding its
tokens in order. Blocks are shared three ways, all through reference counts:
- prefix cache: when a block of a sequence is full and computed, it is registered under the chain hash
  h_i = H(h_{i-1}, tokens of block i); a new sequence whose leading full blocks hash the same (and whose token ids
  and parent hash match the stored ones: a hit is confirmed, never trusted to the hash alone) takes them by reference;
- fork: a branch takes its parent's blocks up to the fork point by reference, the partly filled last one included;
- freed blocks that are registered stay in the cache (ref count 0) until the space is needed; they are then evicted
  least-recently-freed first (a sequence's blocks are freed tail first, so a shared head outlives its tails).
Allocation order: a freed unregistered block, then a never-used one (ids in increasing order), then an eviction. So
`num_touched_blocks`, the ids handed out so far, grows only when the blocks in use (and cached) need it: a runner
may allocate the device pool on demand up to `num_blocks` (the engine does on the CPU).
Copy-on-write: before a sequence writes into a block that someone else also holds (ref count > 1), it gets a fresh
copy (the copy is returned to the caller, who runs it on the device before the step's writes). A registered block
held only by the writer is unregistered instead of copied. Full blocks are never written, so only a partly filled
block (a fork point inside a block) is ever copied.

Pending copies: the copies of a step all run together, before the forward. Until the caller says they ran
(`copies_done()`), the source of each is pinned: if a preemption in the same step drops its last reference, it is
parked instead of pooled, so it cannot be handed out again (as another copy's target, or as a new slot) while the
copy still reads it. Within a step no block is therefore both a source and a target, and `check_step` asserts it.

The prompt's last token is never served from the cache: its logits are needed to sample, so matching stops at the
last full block before it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from .sequence import Sequence


def chain_hash(parent_hash: bytes | None, token_ids) -> bytes:
    """H(parent, tokens): 128-bit blake2b over the parent's hash and the tokens as int64."""
    h = hashlib.blake2b(digest_size=16)
    if parent_hash is not None:
        h.update(parent_hash)
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None            # set while registered in the prefix cache
    parent_hash: bytes | None = None     # for confirming a hit
    token_ids: tuple[int, ...] = ()      # for confirming a hit
    copy_reads: int = 0                  # pending copies (this step) that read this block


class NoFreeBlocks(RuntimeError):
    """Raised when an allocation is attempted without enough free blocks (callers check first)."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque()                           # ref 0, not registered, used before: first
        self._next_fresh = 0                                       # ids >= this were never handed out
        self._evictable: OrderedDict[int, None] = OrderedDict()    # ref 0, registered: LRU order, oldest first
        self._cached: dict[bytes, int] = {}                        # chain hash -> block id
        # This step's planned copies, and the blocks allocated in it, until copies_done().
        self._pending_copies: list[tuple[int, int]] = []
        self._step_allocated: set[int] = set()

    # ---- counts -------------------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (evicting cached ones if needed)."""
        return len(self._free) + (self.num_blocks - self._next_fresh) + len(self._evictable)

    @property
    def num_touched_blocks(self) -> int:
        """Blocks handed out at least once: ids 0 .. num_touched_blocks - 1 (the pool a runner must have)."""
        return self._next_fresh

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix cache -------------------------------------------------------------------------------------------
    def match_prefix(self, token_ids: list[int]) -> tuple[list[int], list[bytes]]:
        """Leading cached blocks of `token_ids` (all but its last token): (block ids, their chain hashes)."""
        if not self.enable_prefix_caching:
            return [], []
        bs = self.block_size
        ids, hashes, parent = [], [], None
        for i in range((len(token_ids) - 1) // bs):
            chunk = token_ids[i * bs:(i + 1) * bs]
            h = chain_hash(parent, chunk)
            block_id = self._cached.get(h)
            if block_id is None:
                break
            block = self.blocks[block_id]
            if block.parent_hash != parent or block.token_ids != tuple(chunk):
                break  # a hash collision: treat as a miss
            ids.append(block_id)
            hashes.append(h)
            parent = h
        return ids, hashes

    def prompt_block_hashes(self, token_ids: list[int], hashes: list[bytes], limit: int | None = None) -> list[bytes]:
        """Chain hashes of the matchable full blocks of `token_ids` after the `len(hashes)` already known (at most
        `limit` of them): what a sequence admitted now will register once computed."""
        bs = self.block_size
        out, parent = [], hashes[-1] if hashes else None
        stop = (len(token_ids) - 1) // bs
        if limit is not None:
            stop = min(stop, len(hashes) + limit)
        for i in range(len(hashes), stop):
            parent = chain_hash(parent, token_ids[i * bs:(i + 1) * bs])
            out.append(parent)
        return out

    def num_free_after_taking(self, block_ids: list[int]) -> int:
        """Free blocks left once `block_ids` (cache hits) are taken: hits on ref-0 blocks come out of the free pool."""
        return self.num_free_blocks - sum(1 for b in block_ids if b in self._evictable)

    def take_prefix(self, seq: Sequence, block_ids: list[int], hashes: list[bytes]) -> None:
        """Give a sequence that holds no blocks the cached blocks `block_ids` as its computed prefix."""
        assert not seq.block_table, "take_prefix on a sequence that holds blocks"
        for b in block_ids:
            self._incref(b)
        seq.block_table = list(block_ids)
        seq.block_hashes = list(hashes)
        seq.num_computed_tokens = len(block_ids) * self.block_size

    def register_full_blocks(self, seq: Sequence) -> None:
        """Register every full, computed block of `seq` not yet registered (call after each step)."""
        bs = self.block_size
        num_full = seq.num_computed_tokens // bs
        while len(seq.block_hashes) < num_full:
            i = len(seq.block_hashes)
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            chunk = seq.token_ids[i * bs:(i + 1) * bs]
            h = chain_hash(parent, chunk)
            seq.block_hashes.append(h)
            if not self.enable_prefix_caching:
                continue
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self._cached:
                block.hash, block.parent_hash, block.token_ids = h, parent, tuple(chunk)
                self._cached[h] = block.block_id

    # ---- allocation ---------------------------------------------------------------------------------------------
    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """Fresh blocks `reserve(seq, num_new_tokens)` would take (new slots, plus one for a copy-on-write)."""
        end = seq.num_computed_tokens + num_new_tokens
        need = max(0, self.blocks_for(end) - len(seq.block_table))
        if self._needs_copy(seq):
            need += 1
        return need

    def reserve(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]]:
        """Make slots for tokens [num_computed, num_computed + num_new_tokens) of `seq`.

        Returns the block copies (src, dst) to run on the device before the step writes (copy-on-write).
        """
        if self.blocks_needed(seq, num_new_tokens) > self.num_free_blocks:
            raise NoFreeBlocks(f"sequence {seq.seq_id} needs {self.blocks_needed(seq, num_new_tokens)} blocks, "
                               f"{self.num_free_blocks} free")
        copies = []
        i = seq.num_computed_tokens // self.block_size
        if i < len(seq.block_table):
            old = self.blocks[seq.block_table[i]]
            if old.ref_count > 1:
                new = self._allocate()
                copies.append((old.block_id, new))
                old.copy_reads += 1          # pinned until copies_done(): see the module docstring
                self._decref(old.block_id)
                seq.block_table[i] = new
            elif old.hash is not None:
                # Held only by this sequence but registered: it is about to change, so it leaves the cache.
                self._unregister(old)
        end = seq.num_computed_tokens + num_new_tokens
        while len(seq.block_table) < self.blocks_for(end):
            seq.block_table.append(self._allocate())
        self._pending_copies += copies
        return copies

    @property
    def has_pending_copies(self) -> bool:
        return bool(self._pending_copies)

    def copies_done(self) -> None:
        """The step's copies have run: unpin their sources; a source nobody holds any more goes to its pool now."""
        for src, _ in self._pending_copies:
            block = self.blocks[src]
            block.copy_reads -= 1
            if block.copy_reads == 0 and block.ref_count == 0:
                self._pool(block)
        self._pending_copies = []
        self._step_allocated = set()

    def fork(self, parent: Sequence, child: Sequence, num_shared_tokens: int) -> None:
        """Give `child` (holding nothing) the parent's first `num_shared_tokens` computed tokens by reference."""
        assert not child.block_table, "fork into a sequence that holds blocks"
        if num_shared_tokens > parent.num_computed_tokens:
            raise ValueError(f"cannot share {num_shared_tokens} tokens, the parent has {parent.num_computed_tokens} "
                             "computed")
        shared = parent.block_table[:self.blocks_for(num_shared_tokens)]
        for b in shared:
            self._incref(b)
        child.block_table = list(shared)
        child.block_hashes = list(parent.block_hashes[:num_shared_tokens // self.block_size])
        child.num_computed_tokens = num_shared_tokens

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references (tail first, so its tail blocks are evicted before its head)."""
        for b in reversed(seq.block_table):
            self._decref(b)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> int:
        """Forget every cached block that no live sequence holds (their K/V came from older weights); returns how
        many. Blocks still held stay registered until freed: callers reset between generate calls, when none are."""
        stale = list(self._evictable)
        for block_id in stale:
            self._unregister(self.blocks[block_id])
            self._free.append(block_id)
        self._evictable.clear()
        return len(stale)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _needs_copy(self, seq: Sequence) -> bool:
        i = seq.num_computed_tokens // self.block_size
        return i < len(seq.block_table) and self.blocks[seq.block_table[i]].ref_count > 1

    def _allocate(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        elif self._next_fresh < self.num_blocks:
            block_id = self._next_fresh
            self._next_fresh += 1
        elif self._evictable:
            block_id, _ = self._evictable.popitem(last=False)
            self._unregister(self.blocks[block_id])
        else:
            raise NoFreeBlocks("no free KV-cache blocks")
        self.blocks[block_id].ref_count = 1
        self._step_allocated.add(block_id)
        return block_id

    def _incref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0 and block.copy_reads == 0:
            # Only a registered block can be taken at ref 0 (a cache hit); it leaves the eviction queue. (A parked
            # one, read by a pending copy, is in no pool: reading it as a prefix is harmless.)
            del self._evictable[block_id]
        block.ref_count += 1

    def _decref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        assert block.ref_count > 0, f"block {block_id} freed twice"
        block.ref_count -= 1
        if block.ref_count == 0 and block.copy_reads == 0:
            self._pool(block)

    def _pool(self, block: Block) -> None:
        """A block nobody holds or reads: registered ones stay cached (evictable), the others are free."""
        if block.hash is not None:
            self._evictable[block.block_id] = None
        else:
            self._free.append(block.block_id)

    def _unregister(self, block: Block) -> None:
        if block.hash is not None and self._cached.get(block.hash) == block.block_id:
            del self._cached[block.hash]
        block.hash, block.parent_hash, block.token_ids = None, None, ()

    def check_invariants(self, live: list[Sequence]) -> None:
        """Ref counts equal the number of live sequences holding each block; pools are consistent (for tests)."""
        counts = [0] * self.num_blocks
        for seq in live:
            for b in seq.block_table:
                counts[b] += 1
        for block in self.blocks:
            assert block.ref_count == counts[block.block_id], \
                f"block {block.block_id}: ref {block.ref_count}, held by {counts[block.block_id]}"
        free, evictable = set(self._free), set(self._evictable)
        assert len(free) == len(self._free) and not free & evictable
        reads = [0] * self.num_blocks
        for src, _ in self._pending_copies:
            reads[src] += 1
        for block in self.blocks[self._next_fresh:]:
            assert block.ref_count == 0 and block.hash is None and block.block_id not in free | evictable, \
                f"never-used block {block.block_id} is in use"
        for block in self.blocks[:self._next_fresh]:
            assert block.copy_reads == reads[block.block_id], f"block {block.block_id}: {block.copy_reads} pins, " \
                                                              f"{reads[block.block_id]} pending copies read it"
            in_pool = block.block_id in free or block.block_id in evictable
            parked = block.ref_count == 0 and block.copy_reads > 0
            assert in_pool == (block.ref_count == 0 and not parked), f"block {block.block_id} pool state wrong"
            assert (block.block_id in evictable) <= (block.hash is not None)
        for h, b in self._cached.items():
            assert self.blocks[b].hash == h
        self.check_step()

    def check_step(self) -> None:
        """This step's planned copies are safe to run together (for tests): no block is both a source and a target,
        no target is shared, and no source is in a free pool or was handed out again in this step."""
        srcs = [s for s, _ in self._pending_copies]
        dsts = [d for _, d in self._pending_copies]
        assert not set(srcs) & set(dsts), f"blocks {sorted(set(srcs) & set(dsts))} are copy sources and targets"
        assert len(set(dsts)) == len(dsts), f"copy targets repeat: {dsts}"
        for d in dsts:
            assert self.blocks[d].ref_count == 1, f"copy target {d} has ref {self.blocks[d].ref_count}"
        pooled = set(self._free) | set(self._evictable)
        for s in srcs:
            assert s not in pooled, f"copy source {s} is in a free pool while its copy is pending"
            assert s not in self._step_allocated, f"copy source {s} was handed out again in the same step"
