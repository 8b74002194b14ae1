"""A training step's metrics: one typed structure of sums, reduced over ranks once and read to the host once.

The step produces sums (`StepSums`), kept as tensors where they are computed (the update's loss statistics on the
device, the drawn groups' counts on the host) and never read back one by one: `StepSums.reduce` stacks them in field
order into ONE float64 vector, sums it over ranks with ONE all-reduce and reads it to the host with ONE `.tolist()`.
`step_record` then divides each sum by the count it is a mean over, over ALL ranks:
- per trace kept for the update (B): reward_kept, regret, regret_normalized, episodes, J_prompt, truncated, length
  (completion tokens), episode_share/j (traces that have a j-th episode);
- per trace drawn before dynamic sampling's filter: reward, accuracy (the policy's own curve);
- per completion token (T): entropy, clip_fraction, kl, approx_kl_old (the update's sums over tokens);
- per drawn group: zero_variance_groups, no_signal_groups, tied_groups_with_signal; per outcome-tied group:
  tied_group_spread; per episode j: progress/episode_j;
- as totals: prompts_generated, generated_tokens, branch_prompt_tokens_computed, preemptions, loss (each rank's
  share of the batch loss); sampling_rounds is the ranks' mean.
grad_norm and ratio_max travel in the same vector but are not summed (this rank's, as logged before).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

Number = float | int | torch.Tensor      # a sum: a host number or a 0-d tensor where it was computed


def _stack(values, device) -> torch.Tensor:
    """Numbers, 0-d and 1-d tensors -> one 1-D float64 tensor on device, in order (int counts are exact in float64
    below 2**53)."""
    return torch.cat([torch.as_tensor(v, dtype=torch.float64).to(device).reshape(-1) for v in values])


def sum_over_ranks(dist, sums: dict) -> dict[str, float]:
    """{name: this rank's sum (number or 0-d tensor)} -> {name: the sum over ranks}: one all-reduce, one host read
    (on one process the numbers stay on the host: no copy to the device and back)."""
    device = dist.device if dist.world_size > 1 else torch.device("cpu")
    return dict(zip(sums, dist.all_reduce_sum(_stack(sums.values(), device)).tolist()))


@dataclass
class UpdateSums:
    """One optimizer step's loss statistics over this rank's micro-batches (`mrt.update.run_update`), 0-d tensors
    on the device: sums over completion tokens (each micro-batch's mean times its tokens), the loss (this rank's
    share of the batch loss), the largest ratio, the gradient norm before clipping and whether the loss and the norm
    were finite."""
    loss: torch.Tensor
    entropy: torch.Tensor
    clip_fraction: torch.Tensor
    clip_high_fraction: torch.Tensor
    clip_low_fraction: torch.Tensor
    kl: torch.Tensor
    approx_kl_old: torch.Tensor
    ratio_mean: torch.Tensor
    tokens: torch.Tensor
    ratio_max: torch.Tensor
    grad_norm: torch.Tensor
    finite: torch.Tensor


@dataclass
class DrawnSums:
    """The step's first round of prompts as drawn, before dynamic sampling's filter (`mrt.sampling`): traces, their
    reward and accuracy sums, groups, and how many groups are outcome-tied / without signal / tied with signal, and
    the tied groups' summed advantage spread."""
    drawn: Number
    reward: Number
    accuracy: Number
    groups: Number
    zero_variance_groups: Number
    no_signal_groups: Number
    tied_groups_with_signal: Number
    tied_group_spread: Number


# Reduced as sums but logged as totals: counts, logged as ints (as on one rank before the stacked reduce).
_COUNTS = ("prompts_generated", "generated_tokens", "branch_prompt_tokens_computed", "preemptions")


@dataclass
class StepSums:
    """This rank's sums of one step (the module docstring says what each is a mean over); every rank makes the same
    fields with the same progress length, so the stacked vectors line up field by field."""
    traces: Number
    reward_kept: Number
    drawn: DrawnSums
    regret: Number
    regret_normalized: Number
    tokens: Number
    episodes: Number
    J_prompt: Number
    truncated: Number
    prompts_generated: Number
    rounds: Number
    entropy: Number
    clip_fraction: Number
    kl: Number
    approx_kl_old: Number
    loss: Number
    prompt_tokens_cached: Number
    prompt_tokens_computed: Number
    generated_tokens: Number
    branch_prompt_tokens_computed: Number
    preemptions: Number
    progress_sum: torch.Tensor                        # (K,) float64: progress summed by episode index j < K
    progress_count: torch.Tensor                      # (K,) traces that have a j-th episode
    local: dict = field(default_factory=dict)         # this rank's, not summed: grad_norm, ratio_max

    def _named(self) -> dict:
        """The summed fields by name, the drawn sums flattened in: {name: number or tensor}."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "drawn":
                out.update({d.name: getattr(v, d.name) for d in dataclasses.fields(v)})
            elif f.name != "local":
                out[f.name] = v
        return out

    def reduce(self, dist) -> dict:
        """Sums over ranks, by name: {name: float}, progress_sum and progress_count as lists, and the local values.
        One all-reduce of the stacked vector (its summed part), one read to the host."""
        named, local = self._named(), self.local
        sizes = [v.numel() if isinstance(v, torch.Tensor) else 1 for v in named.values()]
        n = sum(sizes)
        flat = _stack([*named.values(), *local.values()], dist.device)
        dist.all_reduce_sum(flat[:n])
        values = flat.tolist()
        out, i = {}, 0
        for (name, v), k in zip(named.items(), sizes):
            out[name] = values[i:i + k] if isinstance(v, torch.Tensor) and v.dim() == 1 else values[i]
            i += k
        out.update(zip(local, values[n:]))
        return out


def step_record(g: dict, *, world_size: int, lr: float, times: dict) -> dict:
    """The logged record of a step from its sums over ranks (`StepSums.reduce`) -> {"kind": "train", name: mean}.
    times: the step's wall times ("time/rollout", "time/reward", "time/update", "time/step")."""
    B, T, rl_time = max(g["traces"], 1), max(g["tokens"], 1), times["time/rollout"]
    groups = max(g["groups"], 1)
    rec = {"kind": "train"}
    rec.update({k: g[k] / B for k in ("reward_kept", "regret", "regret_normalized", "episodes", "J_prompt",
                                      "truncated")})
    rec.update({k: g[k] / max(g["drawn"], 1) for k in ("reward", "accuracy")})
    rec["length"] = g["tokens"] / B
    rec.update({k: g[k] / T for k in ("entropy", "clip_fraction", "kl", "approx_kl_old")})
    counts = {k: int(g[k]) for k in _COUNTS}
    rec.update({
        "zero_variance_groups": g["zero_variance_groups"] / groups,
        "no_signal_groups": g["no_signal_groups"] / groups,
        "tied_groups_with_signal": g["tied_groups_with_signal"] / groups,
        "tied_group_spread": g["tied_group_spread"] / max(g["zero_variance_groups"], 1),
        "prompts_generated": counts["prompts_generated"], "sampling_rounds": g["rounds"] / world_size,
        "prefix_cache_hit_rate": g["prompt_tokens_cached"] / max(g["prompt_tokens_cached"]
                                                                  + g["prompt_tokens_computed"], 1),
        "generated_tokens": counts["generated_tokens"],
        "branch_prompt_tokens_computed": counts["branch_prompt_tokens_computed"],
        "preemptions": counts["preemptions"],
        "loss": g["loss"], "grad_norm": g.get("grad_norm", float("nan")),
        "ratio_max": g.get("ratio_max", float("nan")), "lr": lr,
        **times, "tokens_per_s": g["generated_tokens"] / max(rl_time, 1e-9),
        "update_tokens_per_s": g["tokens"] / max(times["time/update"], 1e-9),
    })
    for j, (s, c) in enumerate(zip(g["progress_sum"], g["progress_count"])):
        rec[f"episode_share/{j}"] = c / B          # traces that have a j-th episode
        if c > 0:
            rec[f"progress/episode_{j}"] = s / c
    return rec


def progress_by_episode(batch, progress: torch.Tensor, num_indices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(progress summed by episode index j < num_indices (K,) float64, traces that have a j-th episode (K,)), on the
    batch's device (progress (E,) is in the batch's episode order)."""
    n_ep = batch.episode_offsets.diff()                                                      # (B,)
    owner = torch.repeat_interleave(torch.arange(len(batch), device=n_ep.device), n_ep)      # (E,) trace of each
    j = torch.arange(owner.numel(), device=n_ep.device) - batch.episode_offsets[owner]       # (E,) index in trace
    keep = j < num_indices
    sums = torch.zeros(num_indices, dtype=torch.float64, device=n_ep.device).index_add_(
        0, j[keep], progress[keep].double())
    return sums, torch.bincount(j[keep], minlength=num_indices)
