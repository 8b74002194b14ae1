"""The generate hook's path: a view that copies no trace, and hooks that skip the steps they cannot act on.

At every engine step each trace is shown to the hook; a copy of the trace there is O(length) per step, quadratic
over a trace (seconds of host Python per rank at 24k-token traces). A token list that refuses long slices proves no
step copies one. A hook's `wake_at` lets the engine skip calls; the skipped tokens come with the next call's
`new_token_ids`, and outputs, branches and tags stay those of a hook called every step.
"""
from __future__ import annotations

import random
import sys

import pytest
import torch

from mrt.episodes import fixed_segmenter, markers_segmenter
from mrt.eval.budget_forcing import BudgetHook, _chain
from mrt.meta_prover import BranchTag, MetaProver
from mrt.rollout import Engine, ForkRequest, GenerationStats, SamplingParams, Sequence, SequenceView
from tests.tiny_hf import tiny_qwen2

VOCAB = 61
SHORT = 64     # the longest slice a hook step may take of a trace (a segmenter's window, the new tokens)


class _NoLongSlices(list):
    """A trace's token list that fails on any slice longer than SHORT: a copy of the trace."""

    def __getitem__(self, i):
        if isinstance(i, slice) and len(range(*i.indices(len(self)))) > SHORT:
            raise AssertionError(f"a slice of {len(range(*i.indices(len(self))))} tokens of a trace was taken")
        return super().__getitem__(i)


@pytest.fixture(scope="module")
def model():
    return tiny_qwen2(VOCAB, seed=3)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    import os

    from mrt.models.tokenizer import load_tokenizer
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return load_tokenizer(os.path.join(root, "mrt", "assets", "tiny_model"))


def test_view_copies_nothing_and_keeps_its_step():
    seq = Sequence(list(range(1, 11)), SamplingParams(max_tokens=100))
    seq.token_ids.extend(range(100, 120))
    view = SequenceView.of(seq, 3)
    assert view._tokens is seq.token_ids                       # the sequence's own list
    seq.token_ids.extend([7, 8, 9])                           # later steps append: the view still shows its step
    assert (view.num_prompt_tokens, view.num_output_tokens, view.num_new_tokens) == (10, 20, 3)
    assert view.new_token_ids == [117, 118, 119]
    assert view.output_token(0) == 100 and view.output_token(-1) == 119 and view.output_token(19) == 119
    with pytest.raises(IndexError):
        view.output_token(20)
    with pytest.raises(AttributeError):
        view.request_index = 4                                # read-only
    assert view.prompt_token_ids == list(range(1, 11)) and view.output_token_ids == list(range(100, 120))
    built = SequenceView(seq.request_index, seq.sample_index, list(range(1, 11)), list(range(100, 120)), 3)
    assert built == view and built.new_token_ids == view.new_token_ids


def test_engine_hook_path_never_copies_a_trace(tiny_tokenizer):
    """Engine._call_hook with the meta-prover and the budget hook on long traces: no slice longer than SHORT."""
    text = "Let us add 3 and 4 . So 3 + 4 = 7 .\n\nThen 7 * 2 = 14 .\n\nWait , check : 14 / 2 = 7 .\n\n"
    ids = tiny_tokenizer(text * 60, add_special_tokens=False)["input_ids"]
    term = tiny_tokenizer("Final answer :", add_special_tokens=False)["input_ids"]
    meta = MetaProver(markers_segmenter(["Wait"], 1, None), tiny_tokenizer, termination_ids=term, m=2,
                      answer_max_tokens=3, temperature=1.0, top_p=1.0, max_tokens=len(ids) + 1, stop_token_ids=[0])
    budgets = BudgetHook([100, 400, 900], term, SamplingParams(max_tokens=3, n=2), stop_token_ids=[0])
    hook = _chain(budgets, meta)
    seqs = [Sequence(list(range(1, 200)), SamplingParams(max_tokens=len(ids) + 1), request_index=r) for r in range(2)]
    for seq in seqs:
        seq.token_ids = _NoLongSlices(seq.token_ids)
    engine = Engine.__new__(Engine)                           # the hook path needs no model
    forks = []
    engine._fork = lambda parent, req, stats: forks.append((parent.request_index, req.tag, req.position))
    for t in ids:
        for seq in seqs:
            seq.append_token(t, 0.0)
            seq.num_new_tokens = 1
        engine._call_hook(hook, seqs, GenerationStats())
    tags = [tag for r, tag, _ in forks if r == 0]
    assert [t.position for t in tags if t.kind == "budget"] == [100, 400, 900]
    assert sum(t.kind == "episode" for t in tags) >= 50       # a boundary at every "Wait" paragraph
    assert all(pos == 199 + tag.position for _, tag, pos in forks)


class _Every:
    """A hook that forks at fixed output lengths and, with `skip`, asks to be shown only at those lengths."""

    def __init__(self, fork_at: set[int], skip: bool):
        self.fork_at, self.skip = fork_at, skip
        self.seen: dict[tuple[int, int], list[int]] = {}
        self.calls: list[int] = []
        self.branch = SamplingParams(temperature=1.0, max_tokens=3, n=2, stop_token_ids=[], seed=11)

    def __call__(self, view):
        key = (view.request_index, view.sample_index)
        self.seen.setdefault(key, []).extend(view.new_token_ids)
        self.calls.append(view.num_output_tokens)
        return [ForkRequest([5, 6], self.branch, tag=("at", b), position=view.num_prompt_tokens + b)
                for b in sorted(self.fork_at) if view.num_output_tokens - view.num_new_tokens < b
                <= view.num_output_tokens]

    def wake_at(self, view):
        if not self.skip:
            return None
        return min([b for b in self.fork_at if b > view.num_output_tokens], default=sys.maxsize)


def _flatten(gen):
    return [(c.token_ids, c.logprobs.tolist(), c.finish_reason,
             [(b.tag, b.position, b.token_ids, b.logprobs.tolist()) for b in c.branches])
            for o in gen.outputs for c in o.outputs]


@pytest.mark.parametrize("num_blocks", [512, 14], ids=["ample", "preempting"])
def test_wake_at_skips_calls_and_keeps_the_outputs(model, num_blocks):
    rng = random.Random(num_blocks)
    prompts = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(3, 12))] for _ in range(5)]
    params = SamplingParams(temperature=1.0, max_tokens=21, n=2, stop_token_ids=[0], seed=4)
    every, strided = _Every({5, 10, 15}, False), _Every({5, 10, 15}, True)
    want = Engine(model, block_size=4, num_blocks=num_blocks).generate(prompts, params, hook=every)
    got = Engine(model, block_size=4, num_blocks=num_blocks).generate(prompts, params, hook=strided)
    assert _flatten(got) == _flatten(want)
    assert (got.stats.preemptions > 0) == (num_blocks == 14), got.stats
    assert sum(len(c.branches) for o in want.outputs for c in o.outputs) > 0
    assert len(strided.calls) < len(every.calls) / 3
    for (r, s), toks in strided.seen.items():       # every token reached the hook, in order, once
        assert toks == want.outputs[r].outputs[s].token_ids
    assert strided.seen == every.seen


def test_wake_at_of_the_hooks(tiny_tokenizer):
    term = [3, 4]
    view = lambda n, s=0: SequenceView(0, s, [1, 2, 3], [9] * n, 1)
    budgets = BudgetHook([4, 10], term, SamplingParams(max_tokens=3, n=2))
    budgets(view(1))
    assert budgets.wake_at(view(1)) == 4
    budgets(view(4))
    assert budgets.wake_at(view(4)) == 10
    budgets(view(12))
    assert budgets.wake_at(view(12)) == sys.maxsize
    fixed = MetaProver(fixed_segmenter(8, 3), None, termination_ids=term, m=2, answer_max_tokens=3, temperature=1.0,
                       top_p=1.0, max_tokens=100)
    fixed(view(1))
    assert fixed.wake_at(view(1)) == 9                      # the boundary at 8 is certain with a 9th token
    assert [r.tag for r in fixed(SequenceView(0, 0, [1, 2, 3], [9] * 9, 8))] == [BranchTag.episode(8)]
    assert fixed.wake_at(view(9)) == 17
    fixed(SequenceView(0, 0, [1, 2, 3], [9] * 17, 8))
    assert fixed.wake_at(view(17)) == sys.maxsize           # max_episodes 3: two boundaries, closed
    text = MetaProver(markers_segmenter(["Wait"]), tiny_tokenizer, termination_ids=term, m=2, answer_max_tokens=3,
                      temperature=1.0, top_p=1.0, max_tokens=100, prompt_branches=False)
    text(view(1))
    assert text.wake_at(view(1)) is None                    # a text segmenter reads every token
    off = MetaProver(None, None, termination_ids=term, m=2, answer_max_tokens=3, temperature=1.0, top_p=1.0,
                     max_tokens=100)
    assert [r.tag for r in off(view(1))] == [BranchTag.prompt()]
    assert off.wake_at(view(1)) == sys.maxsize
    assert _chain(budgets, fixed).wake_at(view(17)) == sys.maxsize
    assert _chain(budgets, text).wake_at(view(1)) is None
