"""Held-out evaluation during training (before and after the run, and every `eval.every` steps).

`eval.samples` traces a held-out problem, sampled at `eval.temperature` (0.7 by default; 0 is greedy), with the
meta-prover at their boundaries (J at each, no bare-prompt branches). Logged as means over all ranks' traces:
accuracy, regret (the cumulative regret of mrt.regret: the sum over the trace's episodes of 1 - J, the final
episode's J being the trace's own outcome, so a right trace without corrections has regret 0 and a wrong one at
least 1), regret_normalized (mrt.regret's area per token at the run's budget), length (completion tokens) and
episodes. The problems are split across ranks (`Distributed.shard`); each rank's sums go through one all-reduce.
"""
from __future__ import annotations

import torch

from .regret import batch_normalised_regret, batch_regret
from .reward_fn import reward_answers
from .rollout import SamplingParams
from .rollout_batch import build_batch
from .seeds import derive_seed
from .step_metrics import sum_over_ranks


@torch.no_grad()
def evaluate_held_out(cfg, dist, examples, *, generate, meta_prover, reward_fn, extra_tokens: int) -> dict:
    """{"eval/<name>": mean over all ranks' held-out traces} (module docstring). generate(prompts, params, hook) and
    meta_prover(max_tokens, prompt_branches=, seed=) are the trainer's; extra_tokens: the meta-prover's termination
    text and answer budget, added to every x of the J-vs-tokens curve."""
    e = cfg.eval
    lo, hi = dist.shard(len(examples))
    ex = examples[lo:hi]
    L = e.max_new_tokens or cfg.rollout.max_new_tokens
    params = [SamplingParams(temperature=e.temperature, top_p=cfg.rollout.top_p, max_tokens=L, n=e.samples,
                             seed=derive_seed("eval", cfg.seed, lo + j)) for j in range(len(ex))]
    mp = meta_prover(L, prompt_branches=False, seed=derive_seed("eval-meta-prover", cfg.seed, lo))
    outs = generate([x.prompt_ids for x in ex], params, mp).outputs     # no examples: empty
    batch = build_batch(outs, reward_answers(reward_fn, ex), list(range(len(ex))), reward_fn,
                        termination_text=cfg.meta_prover.termination_text)
    local = {"n": len(batch), "accuracy": batch.correct.double().sum(), "regret": batch_regret(batch),
             "regret_normalized": sum(batch_normalised_regret(batch, extra_tokens=extra_tokens,
                                                              max_new_tokens=cfg.rollout.max_new_tokens)),
             "length": batch.num_completion_tokens, "episodes": batch.episode_ends.numel()}
    g = sum_over_ranks(dist, local)
    n = max(g.pop("n"), 1)
    return {f"eval/{k}": v / n for k, v in g.items()}
