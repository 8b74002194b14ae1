"""Sampling a step's traces: the step's prompts, G traces each by the engine, and DAPO dynamic sampling.

- Prompts: the step's B prompts are a seeded permutation per pass over the data (`step_prompts`), so every rank and a
  resumed run agree; each rank takes its share (`Distributed.shard`).
- A round (`Sampler.round`): G traces a prompt (sampling params seeded by step and group), the meta-prover's forks
  through the engine hook (mrt.meta_prover), rewards and J scored into one packed batch (mrt.rollout_batch).
- Dynamic sampling (`rl.dynamic_sampling`): groups that carry no signal (`Sampler.signal_groups`) are dropped and
  more prompts are drawn (`spare_prompts`, seeded by step and round) until this rank has its share of groups with
  signal or `rl.dynamic_sampling_max_rounds` rounds ran; the batch is then the groups found (if none, the first
  round's batch, so a step always has traces). The first round as drawn, before any filter, is the policy's reward
  curve: its sums (`DrawnSums`) go to the step's metrics (mrt.step_metrics).
"""
from __future__ import annotations

import time

import torch

from .rewards import format_reward
from .reward_fn import reward_answers, shaping_bonus
from .rollout import SamplingParams
from .rollout_batch import RolloutBatch, build_batch
from .seeds import derive_seed
from .step_metrics import DrawnSums


def group_spread(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense group index of each trace (B,), whether each group's rewards differ (G,))."""
    _, g = torch.unique(batch.group_ids, return_inverse=True)
    n = int(g.max()) + 1 if len(batch) else 0
    lo = torch.full((n,), float("inf"), device=g.device).scatter_reduce(0, g, batch.rewards, "amin")
    hi = torch.full((n,), float("-inf"), device=g.device).scatter_reduce(0, g, batch.rewards, "amax")
    return g, lo != hi


def advantage_spread(batch: RolloutBatch, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense group index of each trace (B,), how much each group's traces differ in advantage (G,)): the largest,
    over token positions t, of max - min over the group's traces of the advantage of their token t, a trace past its
    end keeping its last token's advantage (traces without tokens take no part; 0 for a group without tokens).
    A profile over positions that every trace of a group shares is a baseline, not a comparison of its traces."""
    _, g = torch.unique(batch.group_ids, return_inverse=True)
    n = int(g.max()) + 1 if len(batch) else 0
    lens = batch.token_offsets.diff()                                                          # (B,)
    L = int(lens.max()) if len(batch) else 0
    if L == 0:
        return g, torch.zeros(n, dtype=torch.float64, device=g.device)
    last = (lens - 1).clamp(min=0)
    idx = batch.token_offsets[:-1, None] + torch.minimum(torch.arange(L, device=g.device)[None], last[:, None])
    a = advantages.to(torch.float64)[idx.clamp(max=advantages.numel() - 1)]                  # (B, L)
    empty = (lens == 0)[:, None]
    rows = g[:, None].expand(-1, L)
    hi = torch.full((n, L), float("-inf"), dtype=a.dtype, device=a.device).scatter_reduce(
        0, rows, a.masked_fill(empty, float("-inf")), "amax")
    lo = torch.full((n, L), float("inf"), dtype=a.dtype, device=a.device).scatter_reduce(
        0, rows, a.masked_fill(empty, float("inf")), "amin")
    return g, (hi - lo).clamp(min=0.0).amax(dim=1)                                            # (G,)


def num_groups(batch: RolloutBatch) -> int:
    return int(torch.unique(batch.group_ids).numel())


def select_groups(batch: RolloutBatch, g: torch.Tensor, keep: torch.Tensor) -> RolloutBatch:
    """The traces of batch whose group is kept (g: dense group index of each trace (B,), keep: (G,) bool)."""
    return batch.select(keep[g].nonzero().flatten())


def _add_info(info: dict, more: dict) -> None:
    """Accumulate a later round's timings and engine counters into info."""
    for k in ("time/rollout", "time/reward"):
        info[k] += more[k]
    for k, v in more["engine"].items():
        info["engine"][k] = info["engine"].get(k, 0) + v


class Sampler:
    """The step's traces of this rank (module docstring). What it calls is the trainer's: `generate(prompts, params,
    hook)` runs the engine, `meta_prover(max_tokens, prompt_branches=, seed=)` makes the round's hook (or None),
    `advantages(batch)` gives the loss's advantages (the advantage filter compares them)."""

    def __init__(self, cfg, dist, data, *, generate, meta_prover, advantages, reward_fn, shaping):
        self.cfg, self.dist, self.data = cfg, dist, data
        self.generate, self.meta_prover, self.advantages = generate, meta_prover, advantages
        self.reward_fn, self.shaping = reward_fn, shaping
        self._perm_cache = None

    # ---- which prompts ------------------------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[int]:
        """Indices of step's B prompts (all ranks): a permutation per pass over the data, seeded."""
        n, B = len(self.data), self.cfg.optim.prompts_per_step
        out = []
        for k in range(step * B, (step + 1) * B):
            epoch, i = divmod(k, n)
            out.append(int(self._perm(epoch)[i]))
        return out

    def _perm(self, epoch: int) -> list[int]:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed("data-order", self.cfg.seed, epoch))
            self._perm_cache = (epoch, torch.randperm(len(self.data), generator=g).tolist())
        return self._perm_cache[1]

    def spare_prompts(self, step: int, round_: int, n: int) -> list[int]:
        """n extra prompt indices for dynamic sampling's round `round_` of step (seeded by step and round, so a
        resumed run draws the same ones)."""
        g = torch.Generator().manual_seed(derive_seed("spare", self.cfg.seed, step, round_, self.dist.rank))
        return torch.randint(len(self.data), (n,), generator=g).tolist()

    # ---- the step's traces --------------------------------------------------------------------------------------
    def rollout(self, step: int) -> tuple[RolloutBatch, dict]:
        """This rank's traces of step -> (RolloutBatch, info: timings, engine counters, rounds, prompts generated and
        the first round's `DrawnSums` as "drawn")."""
        idx = self.step_prompts(step)
        lo, hi = self.dist.shard(len(idx))
        quota = hi - lo
        batch, info = self.round(idx[lo:hi], step, 0, group_base=lo)
        stats = self.group_stats(batch)
        info["drawn"] = DrawnSums(drawn=len(batch), reward=batch.rewards.double().sum(),
                                  accuracy=batch.correct.double().sum(), groups=num_groups(batch),
                                  **self.signal_counts(stats))
        info["rounds"], info["prompts_generated"] = 1, quota
        if not self.cfg.rl.dynamic_sampling or quota == 0:
            return batch, info
        kept = self.signal_groups(batch, stats)
        while num_groups(kept) < quota and info["rounds"] < self.cfg.rl.dynamic_sampling_max_rounds:
            r = info["rounds"]
            more, more_info = self.round(self.spare_prompts(step, r, quota), step, r, group_base=len(idx) * r + lo)
            kept = RolloutBatch.cat([kept, self.signal_groups(more)])
            _add_info(info, more_info)
            info["rounds"] += 1
            info["prompts_generated"] += quota
        groups = torch.unique(kept.group_ids)[:quota]       # at most the step's share, first drawn first (sorted ids)
        kept = kept.select(torch.isin(kept.group_ids, groups).nonzero().flatten())
        return (kept if len(kept) else batch), info

    def round(self, prompt_idx: list[int], step: int, round_: int, *, group_base: int):
        """Generate G traces (with the meta-prover's forks) for each prompt of prompt_idx -> (RolloutBatch, info)."""
        examples, params, mp = self.requests(prompt_idx, step, round_, group_base)
        t0 = time.perf_counter()
        gen = self.generate([e.prompt_ids for e in examples], params, mp)     # no examples: empty, zero counters
        t1 = time.perf_counter()
        batch = self.score(gen.outputs, examples, group_base)
        t2 = time.perf_counter()
        return batch, {"time/rollout": t1 - t0, "time/reward": t2 - t1, "engine": gen.stats.as_dict()}

    def requests(self, prompt_idx: list[int], step: int, round_: int, group_base: int):
        """A round's examples, their sampling params (seeded by step and group) and its meta-prover hook."""
        cfg, r = self.cfg, self.cfg.rollout
        examples = [self.data[i] for i in prompt_idx]
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_new_tokens,
                                 n=r.group_size, seed=derive_seed("rollout", cfg.seed, step, group_base + j))
                  for j in range(len(examples))]
        mp = self.meta_prover(r.max_new_tokens, prompt_branches=True,
                              seed=derive_seed("meta-prover", cfg.seed, step, round_, group_base))
        return examples, params, mp

    def score(self, outs, examples, group_base: int) -> RolloutBatch:
        """A round's engine outputs -> its packed batch: rewards, J from the branches (groups from group_base on)."""
        batch = build_batch(outs, reward_answers(self.reward_fn, examples),
                            [group_base + j for j in range(len(examples))],
                            self.reward_fn, termination_text=self.cfg.meta_prover.termination_text,
                            format_reward_fn=format_reward, format_weight=self.cfg.format_reward)
        if self.shaping:       # the training reward only: correct (accuracy) and J stay the outcome's
            batch.rewards += torch.tensor(shaping_bonus(outs, examples, self.shaping), dtype=batch.rewards.dtype)
        return batch

    # ---- which groups carry signal ------------------------------------------------------------------------------
    def group_stats(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dense group index of each trace (B,), whether each group's rewards differ (G,), the spread max - min of
        the token advantages the loss would use over each group's tokens (G,))."""
        g, mixed = group_spread(batch)
        return g, mixed, advantage_spread(batch, self.advantages(batch).advantages)[1]

    def signal_groups(self, batch: RolloutBatch, stats=None) -> RolloutBatch:
        """The traces of batch's groups that carry a learning signal, by rl.dynamic_sampling_filter:

        "outcome": the group's rewards differ (DAPO; exactly the groups with non-zero GRPO advantages). "advantage":
        the group's traces differ in the advantage the loss gives their tokens, read at equal token positions
        (`advantage_spread`), by more than rl.dynamic_sampling_min_spread. Under GRPO the two agree. Under MRT dense
        an outcome-tied group still has signal when its traces' episodes made different progress (token t of episode
        j gets alpha * prg_j): one trace right after its first episode and then spending more, another right only at
        its end. Traces that share one advantage profile (all right in one episode each: alpha * (r - J_-1) on every
        token; or the same J at the same boundaries) are only a baseline and are dropped, so the filter does not
        switch itself off when J_-1 = 0 gives nearly every first episode a bonus > 0."""
        g, mixed, spread = stats if stats is not None else self.group_stats(batch)
        rl = self.cfg.rl
        keep = mixed if rl.dynamic_sampling_filter == "outcome" else spread > rl.dynamic_sampling_min_spread
        return select_groups(batch, g, keep)

    def signal_counts(self, stats) -> dict[str, torch.Tensor]:
        """Of the drawn groups (stats: `group_stats`): how many are outcome-tied (all right or all wrong: their GRPO
        advantages are all zero), how many have no signal by their advantages, how many of the tied ones do (a
        progress spread), and the sum of the tied groups' advantage spreads; logged whatever the filter. Tensors,
        read to the host with the step's other metrics."""
        _, mixed, spread = stats
        signal, tied = spread > self.cfg.rl.dynamic_sampling_min_spread, ~mixed
        return {"zero_variance_groups": tied.sum(), "no_signal_groups": (~signal).sum(),
                "tied_groups_with_signal": (tied & signal).sum(), "tied_group_spread": spread[tied].double().sum()}
