"""Block manager on the CPU: prefix-cache hits (confirmed by tokens), ref counts, forks with copy-on-write,
LRU eviction of freed cached blocks, exhaustion."""
import random

import pytest

from mrt.rollout.block_manager import BlockManager, NoFreeBlocks, chain_hash
from mrt.rollout.sequence import SamplingParams, Sequence

BS = 4


def _seq(tokens):
    return Sequence(list(tokens), SamplingParams())


def _compute(bm, seq, n=None):
    """What the engine does for one step: reserve, 'write', advance, register."""
    n = seq.num_uncomputed_tokens if n is None else n
    copies = bm.reserve(seq, n)
    bm.check_step()
    bm.copies_done()                          # the copies run before the step's writes
    seq.num_computed_tokens += n
    bm.register_full_blocks(seq)
    return copies


def _admit(bm, seq):
    ids, hashes = bm.match_prefix(seq.token_ids)
    bm.take_prefix(seq, ids, hashes)
    return len(ids) * bm.block_size


def test_prefix_hit_shares_full_blocks_but_never_the_last_token():
    bm = BlockManager(16, BS)
    a = _seq(range(10))                       # blocks [0..3], [4..7], [8, 9]
    assert _admit(bm, a) == 0
    _compute(bm, a)
    assert len(a.block_table) == 3 and bm.num_cached_blocks == 2
    b = _seq(list(range(8)) + [50, 51, 52])   # shares two full blocks
    assert _admit(bm, b) == 8
    assert b.block_table[:2] == a.block_table[:2]
    assert [bm.blocks[x].ref_count for x in a.block_table[:2]] == [2, 2]
    _compute(bm, b)
    c = _seq(range(8))                        # the whole prompt cached: the last block is recomputed
    assert _admit(bm, c) == 4
    _compute(bm, c)
    bm.check_invariants([a, b, c])


def test_hit_needs_the_whole_chain_and_equal_tokens():
    bm = BlockManager(16, BS)
    a = _seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    _admit(bm, a)
    _compute(bm, a)
    # The same second block after another first block is a different chain: no hit past block 0.
    b = _seq([1, 2, 3, 0, 5, 6, 7, 8, 9])
    assert _admit(bm, b) == 0
    # A forged registration with the right hash but other tokens is rejected (hit confirmed by tokens).
    h = chain_hash(None, [9, 9, 9, 9])
    bm._cached[h] = a.block_table[0]
    c = _seq([9, 9, 9, 9, 1])
    assert _admit(bm, c) == 0


def test_freed_blocks_stay_cached_and_are_evicted_lru_tail_first():
    bm = BlockManager(6, BS)
    a = _seq(range(13))                       # 4 blocks, 3 full (registered)
    _admit(bm, a)
    _compute(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 3
    b = _seq(range(100, 113))                 # needs 4 blocks: the 3 never-registered ones, then evicts 1 cached
    _admit(bm, b)
    _compute(bm, b)
    # a's tail blocks were freed first, so its third block was evicted: its first two still hit.
    c = _seq(range(13))
    assert _admit(bm, c) == 8
    bm.check_invariants([b, c])


def test_fork_shares_blocks_and_copies_a_partly_filled_block_on_write():
    bm = BlockManager(16, BS)
    parent = _seq(range(10))
    _admit(bm, parent)
    _compute(bm, parent)                      # 10 computed: blocks full, full, 2/4
    kids = [_seq(list(range(10)) + [90 + i]) for i in range(3)]
    for k in kids:
        bm.fork(parent, k, 10)
    last = parent.block_table[2]
    assert bm.blocks[last].ref_count == 4
    copies = []
    for k in kids:
        copies += _compute(bm, k)
    # The first two writers copy the shared block; the third still shares it with the parent, so it copies too.
    assert [c[0] for c in copies] == [last] * 3
    assert len({c[1] for c in copies}) == 3
    assert bm.blocks[last].ref_count == 1
    # The parent now holds it alone and writes in place.
    parent.token_ids.append(10)
    assert _compute(bm, parent) == []
    bm.check_invariants([parent] + kids)


def test_fork_in_the_past_into_a_registered_full_block_never_writes_it():
    bm = BlockManager(16, BS)
    parent = _seq(range(12))
    _admit(bm, parent)
    _compute(bm, parent)
    kid = _seq(list(range(6)) + [77, 78])
    bm.fork(parent, kid, 6)                   # shares block 0 and full block 1 (6 of its 4..7 slots valid: 2)
    shared = parent.block_table[1]
    bm.free(parent)                           # the kid holds the registered block alone
    copies = _compute(bm, kid)
    assert copies == []                       # written in place, but first taken out of the prefix cache
    # It left the cache under the parent's hash and is registered again under the kid's own tokens.
    assert bm.blocks[shared].token_ids == (4, 5, 77, 78)
    other = _seq(range(12))                   # must not hit the rewritten block
    assert _admit(bm, other) == 4
    bm.check_invariants([kid, other])


def test_exhaustion_raises_and_counts_are_exact():
    bm = BlockManager(3, BS)
    a = _seq(range(9))
    _admit(bm, a)
    assert bm.blocks_needed(a, 9) == 3
    _compute(bm, a)
    b = _seq([5])
    _admit(bm, b)
    assert bm.blocks_needed(b, 1) == 1 and bm.num_free_blocks == 0
    with pytest.raises(NoFreeBlocks):
        bm.reserve(b, 1)


def test_random_workload_keeps_invariants(seed):
    rng = random.Random(seed)
    bm = BlockManager(40, BS)
    live = []
    for _ in range(200):
        op = rng.random()
        if op < 0.35 or not live:
            prefix = rng.choice([[], list(range(rng.randint(1, 12)))])
            s = _seq(prefix + [rng.randint(0, 5) for _ in range(rng.randint(1, 10))])
            ids, hashes = bm.match_prefix(s.token_ids)
            cached = len(ids) * BS
            if bm.blocks_for(len(s)) - len(ids) <= bm.num_free_after_taking(ids):
                bm.take_prefix(s, ids, hashes)
                assert s.token_ids[:cached] == s.token_ids[:cached]
                _compute(bm, s)
                live.append(s)
        elif op < 0.6:
            p = rng.choice(live)
            pos = rng.randint(1, p.num_computed_tokens)
            k = _seq(p.token_ids[:pos] + [rng.randint(0, 5) for _ in range(rng.randint(1, 6))])
            bm.fork(p, k, pos)
            if bm.blocks_needed(k, k.num_uncomputed_tokens) <= bm.num_free_blocks:
                _compute(bm, k)
                live.append(k)
            else:
                bm.free(k)
        elif op < 0.8:
            s = rng.choice(live)
            s.token_ids.append(rng.randint(0, 5))
            if bm.blocks_needed(s, 1) <= bm.num_free_blocks:
                _compute(bm, s)
            else:
                s.token_ids.pop()
        else:
            s = live.pop(rng.randrange(len(live)))
            bm.free(s)
        bm.check_invariants(live)
        # Every registered block's content is what its hash says (the cache is never corrupted).
        for s in live:
            for i, h in enumerate(s.block_hashes):
                blk = bm.blocks[s.block_table[i]]
                if blk.hash is not None:
                    assert blk.token_ids == tuple(s.token_ids[i * BS:(i + 1) * BS])


def test_reset_prefix_cache_forgets_freed_blocks_only():
    bm = BlockManager(num_blocks=8, block_size=4)
    held, freed = _seq(list(range(9))), _seq(list(range(100, 109)))
    for seq in (held, freed):
        _compute(bm, seq)
    bm.free(freed)
    assert bm.num_cached_blocks == 4                       # two full blocks of each prompt
    assert bm.reset_prefix_cache() == 2                    # only the freed sequence's cached blocks
    assert bm.num_cached_blocks == 2
    assert bm.match_prefix(list(range(100, 109)))[0] == []  # stale K/V are never served again
    assert len(bm.match_prefix(list(range(9)))[0]) == 2     # the held sequence's blocks stay
    assert bm.num_free_blocks == 8 - len(held.block_table)
    bm.check_invariants([held])
