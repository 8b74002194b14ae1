"""A step's metrics: one typed structure of sums (mrt.step_metrics), reduced once and divided by the right counts;
the one regret of training and evaluation (mrt.regret)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mrt.regret import batch_regret, cumulative_regret
from mrt.rollout_batch import RolloutBatch, Trace
from mrt.step_metrics import DrawnSums, StepSums, step_record, sum_over_ranks


class _Ranks:
    """Stand-in for mrt.distributed.Distributed: `world` ranks that all hold the same sums (an all-reduce multiplies
    by world); counts how often it reduces."""

    def __init__(self, world: int):
        self.world_size, self.device, self.reductions = world, torch.device("cpu"), 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.reductions += 1
        return t.mul_(self.world_size)


def _trace(group: int, correct: float, J=(), boundaries=(), n=6) -> Trace:
    return Trace([1, 2], list(range(n)), [0.0] * n, correct, correct, group, list(boundaries), list(J), 0.0, "stop")


def test_batch_regret_is_the_sum_of_each_traces_cumulative_regret():
    traces = [_trace(0, 1.0, J=[0.25, 0.5], boundaries=[2, 4]), _trace(0, 0.0),
              _trace(1, 1.0, J=[1 / 3], boundaries=[3])]
    batch = RolloutBatch.from_traces(traces)
    # each trace's episodes, then its final episode whose J is the trace's own outcome
    want = sum(cumulative_regret([*t.J, t.correct]) for t in traces)
    got = batch_regret(batch)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert float(got) == pytest.approx(want, abs=1e-7)      # J is float32 in the batch: 1/3 rounds there
    assert float(batch_regret(RolloutBatch.from_traces([_trace(0, 1.0)]))) == 0.0    # right, no corrections


def _sums(**over) -> StepSums:
    drawn = DrawnSums(drawn=8, reward=torch.tensor(6.0, dtype=torch.float64), accuracy=torch.tensor(5.0),
                      groups=2, zero_variance_groups=torch.tensor(1), no_signal_groups=torch.tensor(1),
                      tied_groups_with_signal=torch.tensor(0), tied_group_spread=torch.tensor(0.0))
    base = dict(traces=4, reward_kept=torch.tensor(3.0), drawn=drawn, regret=torch.tensor(2.0), regret_normalized=1.0,
                tokens=40, episodes=6, J_prompt=torch.tensor(0.0), truncated=torch.tensor(1), prompts_generated=2,
                rounds=1, entropy=torch.tensor(8.0), clip_fraction=torch.tensor(4.0), kl=torch.tensor(0.0),
                approx_kl_old=torch.tensor(-2.0), loss=torch.tensor(0.5), prompt_tokens_cached=30,
                prompt_tokens_computed=10, generated_tokens=100, branch_prompt_tokens_computed=7, preemptions=0,
                progress_sum=torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64),
                progress_count=torch.tensor([4, 2, 0]), local={"grad_norm": torch.tensor(0.25),
                                                               "ratio_max": torch.tensor(1.5)})
    base.update(over)
    return StepSums(**base)


@pytest.mark.parametrize("world", [1, 2])
def test_step_sums_reduce_once_and_divide_by_their_counts(world):
    ranks = _Ranks(world)
    g = _sums().reduce(ranks)
    assert ranks.reductions == 1
    # summed over ranks, by name; the local values are this rank's
    assert g["traces"] == 4 * world and g["reward"] == 6 * world and g["progress_count"] == [4 * world, 2 * world, 0]
    assert g["grad_norm"] == 0.25 and g["ratio_max"] == 1.5
    rec = step_record(g, world_size=world, lr=1e-3, times={"time/rollout": 1.0, "time/reward": 0.1,
                                                           "time/update": 2.0, "time/step": 3.1})
    assert rec["kind"] == "train"
    assert rec["reward_kept"] == 3 / 4 and rec["regret"] == 2 / 4 and rec["truncated"] == 1 / 4     # per kept trace
    assert rec["reward"] == 6 / 8 and rec["accuracy"] == 5 / 8                                  # per drawn trace
    assert rec["length"] == 10 and rec["entropy"] == 8 / 40 and rec["approx_kl_old"] == -2 / 40    # per token
    assert rec["zero_variance_groups"] == 1 / 2 and rec["tied_group_spread"] == 0.0
    assert rec["prefix_cache_hit_rate"] == 30 / 40 and rec["sampling_rounds"] == 1.0
    assert rec["loss"] == 0.5 * world and rec["grad_norm"] == 0.25 and rec["lr"] == 1e-3
    # totals stay counts
    assert rec["generated_tokens"] == 100 * world and type(rec["generated_tokens"]) is int
    assert rec["episode_share/0"] == 1.0 and rec["progress/episode_0"] == 0.5 / 4
    assert rec["progress/episode_1"] == -0.5 and "progress/episode_2" not in rec and rec["episode_share/2"] == 0.0


def test_step_sums_name_every_field_once():
    names = list(_sums()._named())
    assert len(names) == len(set(names))
    assert {f.name for f in dataclasses.fields(DrawnSums)} <= set(names)


def test_sum_over_ranks_by_name():
    ranks = _Ranks(3)
    assert sum_over_ranks(ranks, {"tokens": 5, "non_finite": torch.tensor(False)}) == {"tokens": 15.0,
                                                                                      "non_finite": 0.0}
    assert ranks.reductions == 1


def test_loss_statistics_stay_on_the_device(monkeypatch):
    """policy_loss's statistics are tensors: nothing is read to the host per micro-batch (the step reads its sums
    once). Every way of reading a tensor's value raises while the loss runs."""
    from mrt.loss import policy_loss

    def read(*a, **k):
        raise AssertionError("a tensor was read to the host")
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(7, generator=g, dtype=torch.float64)).requires_grad_(True)
    old, adv = logp.detach() - 0.1, torch.randn(7, generator=g, dtype=torch.float64)
    mask, seq = torch.tensor([1, 1, 1, 0, 1, 1, 0], dtype=torch.bool), torch.tensor([0, 0, 0, 0, 1, 1, 1])
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, read)
    loss, st = policy_loss(logp, old, adv, mask, seq, ref_logp=old, kl_coef=0.1, num_tokens=5, num_seqs=2)
    monkeypatch.undo()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in st.values())
    assert float(st["num_tokens"]) == 5.0 and 0.0 <= float(st["clip_fraction"]) <= 1.0
