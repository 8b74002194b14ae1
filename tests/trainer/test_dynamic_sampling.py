"""Weak-signal tools of the trainer: the zero-variance group fraction, DAPO's dynamic sampling, normalised regret."""
from __future__ import annotations

import pytest

from mrt.regret import normalised_regret
from mrt.rollout_batch import RolloutBatch, Trace
from mrt.sampling import group_spread, select_groups
from mrt.seeds import derive_seed
from mrt.trainer import Trainer

from .trainer_helpers import tiny_config


def _trace(group: int, reward: float, boundaries=(), J=(), n=10) -> Trace:
    return Trace([1, 2, 3], list(range(n)), [0.0] * n, reward, reward, group, list(boundaries), list(J), 0.0, "stop")


def _mixed_groups(batch):
    return select_groups(batch, *group_spread(batch))


def test_zero_variance_and_mixed_groups():
    batch = RolloutBatch.from_traces([_trace(0, 1.0), _trace(0, 1.0), _trace(1, 0.0), _trace(1, 1.0),
                                      _trace(2, 0.0), _trace(2, 0.0), _trace(3, 0.5)])
    assert int((~group_spread(batch)[1]).sum()) == 3  # groups 0 (all right), 2 (all wrong), 3 (one trace)
    assert [t.group for t in _mixed_groups(batch).traces] == [1, 1]


def test_derive_seed_separates_purposes_and_parts():
    seeds = {derive_seed(p, 0, s, r) for p in ("rollout", "spare") for s in range(50) for r in range(3)}
    assert len(seeds) == 300
    assert derive_seed("rollout", 3, 1) == derive_seed("rollout", 3, 1)
    assert all(0 <= s < 2 ** 31 for s in seeds)
    wide = derive_seed("sample", 7, 0, 1, bits=63)
    assert wide < 2 ** 63 and wide & 0x7FFFFFFF == derive_seed("sample", 7, 0, 1)   # the low bits are the same
    with pytest.raises(ValueError, match="bits"):
        derive_seed("sample", 7, bits=64)


def test_advantage_filter_keeps_mrt_progress_signal(tmp_path):
    """Under MRT dense, an outcome-tied group keeps its signal when its episodes made different progress; a group
    whose tokens all get one advantage (all right in one episode each: alpha * (r - J_-1) everywhere) does not."""
    batch = RolloutBatch.from_traces([
        _trace(0, 1.0), _trace(0, 1.0),                                   # tied, one advantage for every token
        _trace(1, 1.0), _trace(1, 1.0, boundaries=[4], J=[1.0]),         # tied; the second trace's tail added 0
        _trace(2, 0.0), _trace(2, 1.0),                                   # mixed outcomes
        _trace(3, 0.0, boundaries=[3], J=[0.0]), _trace(3, 0.0),         # tied, J 0 everywhere: all advantages 0
        _trace(4, 1.0, boundaries=[5], J=[0.75]), _trace(4, 1.0, boundaries=[5], J=[0.75])])   # identical traces
    for algo, want in (("mrt", [1, 2]), ("grpo", [2])):
        tr = Trainer(tiny_config(tmp_path / algo, "--rl.algo", algo, "--meta_prover.prompt_branches", "false"))
        stats = tr.sampler.group_stats(batch)
        assert sorted({t.group for t in tr.sampler.signal_groups(batch, stats).traces}) == want
        counts = tr.sampler.signal_counts(stats)
        assert counts["no_signal_groups"] == 5 - len(want)
        assert counts["tied_groups_with_signal"] == len(want) - 1
        # group 1's spread: its second trace's first episode gets alpha * J_0 = 1, its tail alpha * (1 - 1) = 0
        assert counts["tied_group_spread"] == pytest.approx(1.0 if algo == "mrt" else 0.0)
    outcome = Trainer(tiny_config(tmp_path / "outcome", "--rl.dynamic_sampling_filter", "outcome"))
    assert sorted({t.group for t in outcome.sampler.signal_groups(batch).traces}) == [2]
    hard = Trainer(tiny_config(tmp_path / "hard", "--rl.dynamic_sampling_min_spread", "1.0"))
    assert sorted({t.group for t in hard.sampler.signal_groups(batch).traces}) == [2]   # group 1's spread is not > 1


@pytest.mark.parametrize("filter_", ["outcome", "advantage"])
def test_dynamic_sampling_keeps_only_groups_with_signal(tmp_path, filter_):
    cfg = tiny_config(tmp_path, "--rl.dynamic_sampling", "true", "--rl.dynamic_sampling_max_rounds", "4",
                      "--optim.prompts_per_step", "4", "--rollout.group_size", "4",
                      "--rl.dynamic_sampling_filter", filter_)
    tr = Trainer(cfg)
    plain = Trainer(tiny_config(tmp_path / "plain", "--optim.prompts_per_step", "4", "--rollout.group_size", "4",
                                "--rl.dynamic_sampling", "false"))
    first, _ = plain.rollout(0)
    batch, info = tr.rollout(0)
    assert 1 <= info["rounds"] <= 4 and info["prompts_generated"] == 4 * info["rounds"]
    signal = tr.sampler.signal_groups(batch)
    if signal.traces:                     # some group had signal: the batch holds such groups only, at most B
        assert len(signal.traces) == len(batch.traces)
        assert len({t.group for t in batch.traces}) <= 4
    else:                                 # none in every round: the first round's batch stands
        assert info["rounds"] == 4 and len(batch.traces) == len(first.traces)
    if len(tr.sampler.signal_groups(first).traces) == len(first.traces):
        assert info["rounds"] == 1        # nothing to replace: no extra generation
    if filter_ == "outcome":
        assert len(_mixed_groups(batch).traces) in (0, len(batch.traces))
    rec = tr.train_step()
    assert 0.0 <= rec["zero_variance_groups"] <= 1.0
    # every group without signal by its advantages is outcome-tied (a mixed group's GRPO advantages differ)
    assert rec["no_signal_groups"] + rec["tied_groups_with_signal"] == pytest.approx(rec["zero_variance_groups"])
    assert rec["prompts_generated"] == 4 * rec["sampling_rounds"]


def test_spare_prompts_are_seeded_by_step_and_round(tmp_path):
    tr = Trainer(tiny_config(tmp_path))
    a, b = tr.spare_prompts(3, 1, 16), tr.spare_prompts(3, 1, 16)
    assert a == b and a != tr.spare_prompts(3, 2, 16) and a != tr.spare_prompts(4, 1, 16)
    assert all(0 <= i < len(tr.train_data) for i in a)


def test_normalised_regret_of_a_trace(tmp_path):
    tr = Trainer(tiny_config(tmp_path))

    def regret(t):
        return tr._normalised_regret(RolloutBatch.from_traces([t]))[0]

    extra = len(tr.termination_ids) + tr.cfg.meta_prover.answer_max_tokens
    L = tr.cfg.rollout.max_new_tokens
    t = _trace(0, 1.0, boundaries=[4], J=[0.0], n=8)
    want = normalised_regret([3 + 4 + extra, 3 + 8 + extra], [0.0, 1.0], 3 + L + extra)
    assert regret(t) == pytest.approx(want)
    # Right from the first boundary on: regret is the share of the budget before it (and the linear ramp to it).
    right = _trace(0, 1.0, boundaries=[1], J=[1.0], n=8)
    assert regret(right) < regret(t)
    # A wrong trace never succeeds: regret 1, whatever its length.
    assert regret(_trace(0, 0.0, n=5)) == pytest.approx(1.0)
    assert regret(_trace(0, 0.0, n=50)) == pytest.approx(1.0)


def test_fsdp_ranks_run_the_same_number_of_micro_batches():
    """A rank with fewer micro-batches repeats its last one, masked out, so FSDP's collectives pair up."""
    import types

    import torch

    from mrt.rollout_batch import PackedUpdate

    def mb(n):
        return PackedUpdate(torch.arange(n), torch.arange(n), torch.arange(n), torch.ones(n, dtype=torch.bool),
                            torch.ones(n), torch.zeros(n), torch.zeros(n, dtype=torch.int64), [n])

    dist = types.SimpleNamespace(strategy="fsdp", world_size=2, all_gather_objects=lambda x: [x, 3])
    micro = Trainer._same_count_on_every_rank(types.SimpleNamespace(dist=dist), [mb(5)])
    assert len(micro) == 3
    assert micro[0].mask.all() and not micro[1].mask.any() and not micro[2].mask.any()
    assert torch.equal(micro[1].input_ids, micro[0].input_ids) and not micro[2].advantages.any()
    ddp = types.SimpleNamespace(strategy="ddp", world_size=2, all_gather_objects=lambda x: [x, 3])
    assert len(Trainer._same_count_on_every_rank(types.SimpleNamespace(dist=ddp), [mb(5)])) == 1
