"""The engine under KV-cache pressure: a randomized workload on a cache far too small for it.

Many prompts (some sharing a prefix, some sent twice), `n` samples each, and a hook that forks branches at the
current token and at earlier positions, several per fork. On a tiny cache the scheduler preempts and recomputes,
waiting sequences hit the prefix cache, and forks copy partly filled blocks, all in the same steps. Every completion
and every branch must equal the same work on an ample cache, greedy and seeded (a seeded sequence's draws depend only
on its own stream, never on batching). The hook's forks are a function of (request, sample, output length) only:
preemption changes the order of hook calls, so a plan drawn in call order would differ between the two runs.

After every schedule and every step the block manager's invariants are checked: reference counts equal the holders,
no held block is in a free pool, and no block is both the source and the target of a copy in one step (nor a copy
source handed out again while its copy is pending).
"""
from __future__ import annotations

import random

import pytest
import torch

from mrt.rollout import Engine, ForkRequest, SamplingParams
from tests.tiny_hf import tiny_qwen2

VOCAB = 61
BLOCK = 4


@pytest.fixture(scope="module")
def model():
    return tiny_qwen2(VOCAB, seed=7)


def _workload(seed: int, temperature: float):
    """Prompts (a shared head for half of them, one prompt repeated), per-request params, the hook's fork plan."""
    rng = random.Random(seed)
    head = [rng.randrange(1, VOCAB) for _ in range(9)]
    prompts = []
    for i in range(10):
        tail = [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 12))]
        prompts.append((head if i % 2 else []) + tail)
    prompts.append(list(prompts[3]))                    # the same prompt twice: a prefix hit for a waiting one
    params = [SamplingParams(temperature=temperature, max_tokens=rng.randint(12, 22), n=rng.choice([1, 2, 3]),
                             stop_token_ids=[], seed=None if temperature == 0 else seed + i)
              for i in range(len(prompts))]
    return prompts, params


def _fork_plan(seed: int, request: int, sample: int, num_output: int, num_prompt: int, temperature: float):
    """ForkRequests of trace (request, sample) when it has `num_output` tokens: a function of those numbers only."""
    rng = random.Random(f"{seed}/{request}/{sample}/{num_output}")
    if rng.random() > 0.3:
        return None
    forks = []
    for _ in range(rng.randint(1, 2)):
        # None: at the current token (its just-sampled token not yet computed); else anywhere earlier, prompt included
        position = None if rng.random() < 0.5 else rng.randint(1, num_prompt + num_output)
        cont = [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 5))]
        bp = SamplingParams(temperature=temperature, max_tokens=rng.randint(2, 6), n=rng.randint(1, 3),
                            stop_token_ids=[], seed=None if temperature == 0 else seed + 1000 + request)
        forks.append(ForkRequest(cont, bp, tag=(num_output, position), position=position))
    return forks


def _checked(engine: Engine) -> dict:
    """Wrap the engine's scheduler and step with the block manager's invariant checks; returns step counters."""
    bm, sched = engine.block_manager, engine.scheduler
    seen = dict(steps=0, steps_preempt_and_copy=0)
    schedule, step = sched.schedule, engine.step

    def checked_schedule():
        batch = schedule()
        bm.check_invariants(sched.running)          # with this step's copies pending: check_step included
        assert all(not s.block_table for s in sched.waiting), "a waiting sequence holds blocks"
        seen["steps"] += 1
        seen["steps_preempt_and_copy"] += bool(batch.num_preempted and batch.copies)
        return batch

    def checked_step(hook, stats):
        done = step(hook, stats)
        bm.check_invariants(sched.running)
        assert not bm.has_pending_copies
        return done

    sched.schedule, engine.step = checked_schedule, checked_step
    return seen


def _run(model, seed: int, temperature: float, num_blocks: int):
    prompts, params = _workload(seed, temperature)

    def hook(view):
        return _fork_plan(seed, view.request_index, view.sample_index, len(view.output_token_ids),
                          len(view.prompt_token_ids), temperature)

    engine = Engine(model, block_size=BLOCK, num_blocks=num_blocks, max_num_batched_tokens=48)
    seen = _checked(engine)
    gen = engine.generate(prompts, params, hook=hook)
    engine.block_manager.check_invariants([])       # everything freed
    return gen.outputs, gen.stats, seen


def _flatten(outs):
    """{(request, sample[, branch tag, branch index]): (tokens, logprobs)} of every completion and branch."""
    got = {}
    for r, out in enumerate(outs):
        for c in out.outputs:
            got[(r, c.index)] = (c.token_ids, c.logprobs)
            for j, b in enumerate(c.branches):
                got[(r, c.index, b.tag, b.position, j)] = (b.continuation_token_ids + b.token_ids, b.logprobs)
    return got


@pytest.mark.parametrize("seed,temperature", [(0, 0.0), (1, 1.0)], ids=["greedy", "seeded"])
def test_tiny_cache_gives_the_outputs_of_an_ample_one(model, seed, temperature):
    ample, ample_stats, _ = _run(model, seed, temperature, num_blocks=512)
    # 16 blocks of 4 hold the longest branch (prompt 21 + 22 output + 5 + 6 tokens) and a copy, little more.
    tiny, stats, seen = _run(model, seed, temperature, num_blocks=16)
    assert ample_stats.preemptions == 0
    assert stats.preemptions > 0 and stats.recomputed_tokens > 0, stats
    assert stats.cow_copies > 0 and stats.prompt_tokens_cached > 0, stats
    assert seen["steps_preempt_and_copy"] > 0, "no step both preempted and copied: the workload is too easy"
    want, got = _flatten(ample), _flatten(tiny)
    assert got.keys() == want.keys()
    assert ample_stats.branches > 20
    for key in want:
        assert got[key][0] == want[key][0], f"{key}: tiny cache {got[key][0]}, ample {want[key][0]}"
        torch.testing.assert_close(got[key][1], want[key][1], atol=1e-5, rtol=0)      # float32 tensors
