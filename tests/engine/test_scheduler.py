"""Scheduler on the CPU with a fake model: token budget, sequence cap, chunked prefill, preemption by recompute."""
import random

import pytest

from mrt.rollout.block_manager import BlockManager
from mrt.rollout.scheduler import Scheduler
from mrt.rollout.sequence import SamplingParams, Sequence


def _fake_token(seq):
    """A deterministic 'model': the next token is a function of the tokens so far, so a recompute is checkable."""
    return (sum(seq.token_ids) * 31 + len(seq)) % 97


def _run(sched, seqs, max_steps=10_000):
    for s in seqs:
        sched.add(s)
    steps = []
    while sched.has_unfinished():
        batch = sched.schedule()
        assert len(batch) > 0, "no progress"
        sched.bm.check_step()
        sched.bm.copies_done()                    # what the runner does before the forward
        assert batch.total_tokens <= sched.max_num_batched_tokens
        assert len(batch) <= sched.max_num_seqs
        for seq, n in zip(batch.seqs, batch.num_tokens):
            # Every slot written this step exists and belongs to the sequence alone.
            assert len(seq.block_table) * sched.bm.block_size >= seq.num_computed_tokens + n
            seq.num_computed_tokens += n
            sched.bm.register_full_blocks(seq)
        for seq in batch.seqs:
            if seq.num_uncomputed_tokens == 0:
                seq.append_token(_fake_token(seq), 0.0)
                if seq.num_output_tokens >= seq.params.max_tokens:
                    sched.finish(seq, "length")
        sched.bm.check_invariants(sched.running)
        steps.append(batch)
        assert len(steps) < max_steps
    return steps


def _expected(prompt, n):
    s = Sequence(list(prompt), SamplingParams(max_tokens=n))
    for _ in range(n):
        s.append_token(_fake_token(s), 0.0)
    return s.output_token_ids


def test_budget_cap_and_chunked_prefill():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=3, max_num_batched_tokens=10)
    prompts = [list(range(1, 24)), [5, 6], [7] * 9, [1, 2, 3, 4, 5]]
    seqs = [Sequence(p, SamplingParams(max_tokens=5)) for p in prompts]
    steps = _run(sched, seqs)
    assert steps[0].num_tokens == [10]            # the long prompt is chunked by the budget
    for s, p in zip(seqs, prompts):
        assert s.output_token_ids == _expected(p, 5)


def test_preemption_under_a_tiny_pool_gives_the_same_tokens(seed):
    rng = random.Random(seed)
    prompts = [[rng.randint(0, 96) for _ in range(rng.randint(1, 12))] for _ in range(8)]
    for p in prompts[4:]:
        p[:6] = prompts[0][:6]                    # some shared prefixes
    seqs = [Sequence(p, SamplingParams(max_tokens=rng.randint(1, 20))) for p in prompts]
    sched = Scheduler(BlockManager(10, 4), max_num_seqs=8, max_num_batched_tokens=32)
    steps = _run(sched, seqs)
    assert sum(batch.num_preempted for batch in steps) > 0
    for s, p in zip(seqs, prompts):
        assert s.output_token_ids == _expected(p, s.params.max_tokens), f"prompt {p}"


def test_waiting_sequences_use_the_prefix_cache():
    sched = Scheduler(BlockManager(32, 4), max_num_batched_tokens=64)
    a = Sequence(list(range(20)), SamplingParams(max_tokens=1))
    _run(sched, [a])
    b = Sequence(list(range(20)) + [3], SamplingParams(max_tokens=1))
    steps = _run(sched, [b])
    assert b.num_cached_tokens == 20 and steps[0].num_tokens == [1]


def test_the_same_prompt_in_one_batch_is_computed_once():
    sched = Scheduler(BlockManager(32, 4), max_num_batched_tokens=64)
    seqs = [Sequence(list(range(18)), SamplingParams(max_tokens=2)) for _ in range(3)]
    other = Sequence([50, 51], SamplingParams(max_tokens=2))
    steps = _run(sched, seqs + [other])
    # The copies wait one step (the unrelated prompt behind them does not), then hit every full block.
    assert steps[0].seqs == [seqs[0], other]
    assert [s.num_cached_tokens for s in seqs] == [0, 16, 16]
    for s in seqs:
        assert s.output_token_ids == _expected(list(range(18)), 2)


def test_a_sequence_larger_than_the_cache_raises():
    sched = Scheduler(BlockManager(2, 4))
    with pytest.raises(RuntimeError, match="does not fit"):
        _run(sched, [Sequence(list(range(12)), SamplingParams(max_tokens=1))])
    sched = Scheduler(BlockManager(2, 4))
    with pytest.raises(RuntimeError, match="does not fit"):
        _run(sched, [Sequence(list(range(6)), SamplingParams(max_tokens=10))])


def test_branch_noise_streams_differ_between_parents_and_fork_points():
    """A hook forks every trace's branches with one SamplingParams: a branch's stream mixes in its parent's, so the
    branches of different traces (and of different fork points) never share their draws."""
    from mrt.rollout.sequence import BranchOrigin
    parents = [Sequence(list(range(8)), SamplingParams(seed=s)) for s in (1, 2)]
    meta = SamplingParams(seed=5)
    streams = {Sequence(list(range(p)), meta, branch=BranchOrigin(par, p, [], None), sample_index=j).seed_stream
               for par in parents for p in (3, 6) for j in range(2)}
    assert len(streams) == 8
    again = Sequence(list(range(3)), meta, branch=BranchOrigin(parents[0], 3, [], None)).seed_stream
    assert again in streams                                   # deterministic: recomputing gives the same stream
