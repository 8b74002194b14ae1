"""The packed batch: build_batch from engine outputs (branches scored once, boundaries from the branches), the
tensor packing of micro_batches against its per-token definition, select / cat."""
from __future__ import annotations

import random

import pytest
import torch

from mrt.meta_prover import BranchTag
from mrt.rollout.outputs import BranchOutput, CompletionOutput, RequestOutput, _Text
from mrt.rollout_batch import RolloutBatch, Trace, build_batch, micro_batches, micro_batches_ref


def _random_traces(rng: random.Random, B: int) -> list[Trace]:
    traces = []
    for b in range(B):
        P, C = rng.randint(1, 9), rng.choice([1, 2, rng.randint(3, 31)])     # odd lengths, single tokens
        bounds = sorted(rng.sample(range(1, C + 1), rng.randint(0, min(C, 3))))
        traces.append(Trace([rng.randrange(32003) for _ in range(P)], [rng.randrange(32003) for _ in range(C)],
                            [-rng.random() for _ in range(C)],
                            float(rng.random() < 0.5), float(rng.random() < 0.5), b // 3, bounds,
                            [rng.random() for _ in bounds], rng.random(), rng.choice(["stop", "length"])))
    return traces


def _f32(xs: list[float]) -> list[float]:
    return torch.tensor(xs, dtype=torch.float32).tolist()


@pytest.mark.parametrize("B,budget", [(1, 1), (7, 13), (23, 40), (23, 10_000)])
def test_micro_batches_equal_the_reference_packing(seed, B, budget):
    rng = random.Random(seed)
    traces = _random_traces(rng, B)
    T = sum(len(t.completion_ids) for t in traces)
    adv = torch.randn(T)
    got = micro_batches(RolloutBatch.from_traces(traces), adv, budget)
    want = micro_batches_ref(traces, adv.tolist(), budget)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.seq_lens == w.seq_lens, i
        for name in ("input_ids", "positions", "targets", "mask", "advantages", "old_logp", "seq_ids"):
            a, b = getattr(g, name), getattr(w, name)
            assert a.dtype == b.dtype and a.shape == b.shape, (i, name, a.dtype, b.dtype, a.shape, b.shape)
            bad = (a != b).nonzero().flatten().tolist()
            assert not bad, f"micro-batch {i} {name}: mismatches at {bad[:10]}: {a[bad[:10]]} != {b[bad[:10]]}"


def test_traces_round_trip_select_and_cat(seed):
    rng = random.Random(seed)
    traces = _random_traces(rng, 11)
    batch = RolloutBatch.from_traces(traces)
    for t in traces:           # the batch holds float32 values
        t.old_logp, t.J, t.reward, t.correct, t.J_prompt = _f32(t.old_logp), _f32(t.J), *_f32(
            [t.reward, t.correct, t.J_prompt])
    assert batch.traces == traces and len(batch) == 11
    assert batch.num_completion_tokens == sum(len(t.completion_ids) for t in traces)
    idx = [8, 0, 3, 10]
    assert batch.select(torch.tensor(idx)).traces == [traces[i] for i in idx]
    assert len(batch.select(torch.tensor([], dtype=torch.int64))) == 0
    both = RolloutBatch.cat([batch.select(torch.tensor([1, 2])), batch.select(torch.tensor([5]))])
    assert both.traces == [traces[1], traces[2], traces[5]]
    assert torch.equal(both.advantage_inputs()["token_offsets"], both.token_offsets)


def _branch(tag: BranchTag, P: int, text: str) -> BranchOutput:
    return BranchOutput(tag, P + tag.position, [7], [1] * len(text), [0.0] * len(text), "stop", _Text(value=text))


def test_build_batch_scores_every_branch_once_and_takes_boundaries_from_the_branches():
    P = 3
    texts = {"a1": 1.0, "a0": 0.0}
    # Sample 0 carries the bare-prompt branches; boundaries 2 and 5 are forked (5 only once), 9 lies past the end.
    c0 = CompletionOutput(0, [4] * 6, [-0.5] * 6, "stop", 0, [
        _branch(BranchTag.prompt(), P, "a1"), _branch(BranchTag.prompt(), P, "a0"),
        _branch(BranchTag.episode(5), P, "a1"), _branch(BranchTag.episode(2), P, "a0"),
        _branch(BranchTag.episode(2), P, "a1"), _branch(BranchTag.episode(9), P, "a1")], _Text(value="a1"))
    c1 = CompletionOutput(1, [4] * 4, torch.full((4,), -0.25), "length", 0, [], _Text(value="a0"))
    calls = []

    def reward(text, answer):
        calls.append(text)
        return texts[text.removeprefix("T:")]

    batch = build_batch([RequestOutput([1, 2, 3], [c0, c1])], ["x"], [7], reward, termination_text="T:")
    assert len(calls) == 6 + 2           # each branch once, each completion once
    t0, t1 = batch.traces
    assert t0.boundaries == [2, 5] and t0.J == [0.5, 1.0] and t0.J_prompt == 0.5 == t1.J_prompt
    assert t1.boundaries == [] and t1.old_logp == [-0.25] * 4 and t1.finish_reason == "length"
    assert (t0.reward, t1.reward, t0.group) == (1.0, 0.0, 7)
    # Without bare-prompt branches J_prompt is the default.
    alone = build_batch([RequestOutput([1], [c1])], ["x"], [0], reward, termination_text="T:", default_J_prompt=0.25)
    assert alone.traces[0].J_prompt == 0.25
    assert len(build_batch([], [], [], reward, termination_text="T:")) == 0
