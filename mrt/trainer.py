"""The training loop (docs/algorithm.md, "One training step"), for `rl.algo: mrt` and its GRPO baseline (`rl.algo:
grpo`: the same code with the progress bonus off, and no meta-prover unless `meta_prover.enabled`).

One step:
1. this rank's share of B prompts (a seeded permutation, so every rank and a resumed run agree), G traces each, by
   the engine on the training model's own parameters (the prefix cache is dropped first: the weights changed);
2. online segmentation and meta-prover forks through the engine hook (`mrt.meta_prover`);
3. rewards of traces and branch answers (each scored once), J, into ONE packed batch of tensors
   (`mrt.rollout_batch.build_batch`), copied to the device once; progress and advantages (ONE `progress_advantages`
   call for the batch, on the device);
4. packed update by micro-batches (slices of the device batch) with gradient accumulation (`mrt.update`), optimizer
   and schedule step;
5. metrics (`mrt.metrics_log`), checkpoints (`mrt.checkpoint`).
Held-out evaluation (before and after, and every `eval.every` steps): `eval.samples` traces a problem sampled at
`eval.temperature` (0.7 by default; 0 is greedy) with the meta-prover at their boundaries; accuracy, and regret =
sum over the trace's episodes of (1 - J), the final episode's J being the trace's own outcome (so a correct trace
without corrections has regret 0, a wrong one at least 1).
Faults: a non-finite loss or gradient norm skips the step (logged); MAX_BAD_STEPS in a row stop the run. Ctrl-C
writes a checkpoint of the last completed step and returns cleanly.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
import warnings

import numpy as np
import torch

from mrt_kernels import progress_advantages

from . import checkpoint as ckpt
from .config import Config, ConfigError, load_config
from .data import load_run_data, write_skip_report
from .distributed import (Distributed, gathered_optimizer_state, init_distributed, load_fsdp_checkpoint,
                          sync_generation_model, unwrap, wrap_model)
from .hub import load_checked_tokenizer, load_model, resolve_model_path
from .episodes import make_segmenter
from .errors import UserError
from .meta_prover import MetaProver
from .metrics_log import MetricsLogger
from .models.lora_model import apply_lora
from .rewards import format_reward, get_reward
from .reward_fn import Shaping, reward_answers, shaping_bonus
from .rollout import Engine, SamplingParams
from .rollout_batch import RolloutBatch, build_batch, micro_batches
from .seeds import derive_seed
from .update import UpdateSettings, make_optimizer, make_scheduler, recompute_old_logp, run_update

MAX_BAD_STEPS = 3
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrainingStopped(UserError, RuntimeError):
    """The run cannot go on (e.g. non-finite losses several steps in a row); the message says what to change."""


class Trainer:
    def __init__(self, cfg: Config, dist_env: Distributed | None = None):
        self.cfg = cfg
        self.dist = dist_env or init_distributed(cfg.distributed.backend)
        d = self.dist
        _seed_all(derive_seed("global-rng", cfg.seed, d.rank))
        # Model folder and tokenizer first, then the data: a user's mistake in any of them ends the run before the
        # engine is sized or a step is taken (one-line errors, mrt.errors). A hub id is downloaded (mrt.hub).
        path = resolve_model_path(cfg.model.path, revision=cfg.model.revision)
        dtype = _DTYPES[cfg.model.dtype]
        self.model = load_model(path, dtype=dtype, device=d.device)
        # model.lora: adapters on the target linears, the rest frozen (None: full fine-tuning; mrt.models.lora)
        self.lora = apply_lora(self.model, cfg.model.lora, path, seed=derive_seed("lora-init", cfg.seed))
        tok_key = "model.tokenizer_path" if cfg.model.tokenizer_path else "model.path"
        tok_path = resolve_model_path(cfg.model.tokenizer_path, revision=cfg.model.revision, key=tok_key) \
            if cfg.model.tokenizer_path else path
        self.tokenizer = load_checked_tokenizer(tok_path, self.model.config.vocab_size, key=tok_key)
        self._load_data()
        self.model.gradient_checkpointing = cfg.model.gradient_checkpointing
        self.train_model = wrap_model(self.model, d, cfg.distributed.strategy)
        # FSDP2: generation runs on an unsharded copy filled from the shards each step (see mrt.distributed).
        self.gen_model = load_model(path, dtype=dtype, device=d.device) if d.strategy == "fsdp" else self.model
        if self.lora is not None:      # the engine's model: a merged copy, or the training model with its adapters
            self.gen_model = self.lora.generation_model(d.strategy)
        self.ref_model = None
        if cfg.rl.kl_coef > 0:
            self.ref_model = load_model(path, dtype=dtype, device=d.device).requires_grad_(False)
        r = cfg.rollout
        self.engine = Engine(self.gen_model, self.tokenizer, block_size=r.block_size, num_blocks=r.num_blocks,
                             max_num_seqs=r.max_num_seqs, max_num_batched_tokens=r.max_num_batched_tokens,
                             enable_prefix_caching=r.enable_prefix_caching, memory_fraction=r.memory_fraction,
                             cuda_graphs=None if r.cuda_graphs else False)     # None: on where the model is on CUDA
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, cfg.optim.steps)
        self.reward_fn = get_reward(cfg.reward)
        self.shaping = Shaping(cfg.shaping)          # empty unless the config lists shaping terms
        self.update_settings = UpdateSettings.from_config(cfg)
        self.segmenter = make_segmenter(cfg.episodes)
        self.termination_ids = self.tokenizer(cfg.meta_prover.termination_text, add_special_tokens=False)["input_ids"]
        self.stop_ids = list(self.model.config.eos_token_ids or [])
        self.step = 0
        self.bad_steps = 0

    # ---- data ---------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        data = load_run_data(self.cfg, self.tokenizer)      # the same reading as `train.py --check` (mrt.check)
        # data_sources: their dropped rows go to the run folder (train())
        self.train_data, self.eval_data, self.data_sources = data.train, data.held_out, data.sources

    def step_prompts(self, step: int) -> list[int]:
        """Indices of step's B prompts (all ranks): a permutation per pass over the data, seeded."""
        n, B = len(self.train_data), self.cfg.optim.prompts_per_step
        out = []
        for k in range(step * B, (step + 1) * B):
            epoch, i = divmod(k, n)
            perm = self._perm(epoch)
            out.append(int(perm[i]))
        return out

    def _perm(self, epoch: int):
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed("data-order", self.cfg.seed, epoch))
            self._perm_cache = (epoch, torch.randperm(len(self.train_data), generator=g).tolist())
        return self._perm_cache[1]

    # ---- rollout ------------------------------------------------------------------------------------------------
    def _meta_prover(self, max_tokens: int, *, prompt_branches: bool, seed: int | None) -> MetaProver | None:
        if not self.cfg.meta_prover.enabled:
            return None
        return MetaProver.from_config(self.cfg.meta_prover, self.segmenter, self.tokenizer,
                                      termination_ids=self.termination_ids, max_tokens=max_tokens,
                                      max_len=self.engine.max_model_len, stop_token_ids=self.stop_ids,
                                      prompt_branches=prompt_branches, seed=seed)

    def _sync_generation_model(self) -> None:
        """FSDP2: gather the shards into the generation copy. A collective: every rank calls it once at the start of
        rollout() and evaluate(), never inside the rank-local generation rounds (a rank may run more rounds of
        dynamic sampling than another, or have no prompts of its own)."""
        if self.dist.strategy == "fsdp":
            sync_generation_model(self.train_model, self.gen_model)
        if self.lora is not None:      # W0 + (alpha/r) B A into the generation copy, in place
            self.lora.sync()

    def _generate(self, prompts, params, hook):
        self.engine.reset_prefix_cache()     # cached K/V were computed by the weights before the last update
        return self.engine.generate(prompts, params, hook=hook)

    def rollout(self, step: int):
        """This rank's traces of step -> (RolloutBatch, timings and engine counters).

        With `rl.dynamic_sampling` (DAPO): groups that carry no signal (`_signal_groups`) are dropped and more prompts
        are drawn (`spare_prompts`) until this rank has its share of groups with signal or
        `rl.dynamic_sampling_max_rounds` rounds of generation ran; the batch is then the groups found (if none, the
        first round's batch, so a step always has traces).
        """
        self._sync_generation_model()
        idx = self.step_prompts(step)
        lo, hi = self.dist.shard(len(idx))
        quota = hi - lo
        batch, info = self._rollout_round(idx[lo:hi], step, 0, group_base=lo)
        # The step's prompts as drawn, before any filtering: the policy's reward curve (dynamic sampling's kept
        # groups are biased towards 0.5 and are logged apart, as reward_kept). Sums by name, reduced with the rest.
        stats = self._group_stats(batch)
        info["drawn"] = {"drawn": len(batch), "reward": _total(batch.rewards), "accuracy": _total(batch.correct),
                         "groups": _num_groups(batch), **self._signal_counts(stats)}
        info["rounds"], info["prompts_generated"] = 1, quota
        if not self.cfg.rl.dynamic_sampling or quota == 0:
            return batch, info
        kept = self._signal_groups(batch, stats)
        while _num_groups(kept) < quota and info["rounds"] < self.cfg.rl.dynamic_sampling_max_rounds:
            r = info["rounds"]
            more, more_info = self._rollout_round(self.spare_prompts(step, r, quota), step, r,
                                                  group_base=len(idx) * r + lo)
            kept = RolloutBatch.cat([kept, self._signal_groups(more)])
            _add_info(info, more_info)
            info["rounds"] += 1
            info["prompts_generated"] += quota
        groups = torch.unique(kept.group_ids)[:quota]       # at most the step's share, first drawn first (sorted ids)
        kept = kept.select(torch.isin(kept.group_ids, groups).nonzero().flatten())
        return (kept if len(kept) else batch), info

    def spare_prompts(self, step: int, round_: int, n: int) -> list[int]:
        """n extra prompt indices for dynamic sampling's round `round_` of step (seeded by step and round, so a
        resumed run draws the same ones)."""
        g = torch.Generator().manual_seed(derive_seed("spare", self.cfg.seed, step, round_, self.dist.rank))
        return torch.randint(len(self.train_data), (n,), generator=g).tolist()

    def _rollout_round(self, prompt_idx: list[int], step: int, round_: int, *, group_base: int):
        """Generate G traces (with the meta-prover's forks) for each prompt of prompt_idx -> (RolloutBatch, info)."""
        examples, params, mp = self._round_requests(prompt_idx, step, round_, group_base)
        t0 = time.perf_counter()
        gen = self._generate([e.prompt_ids for e in examples], params, mp)     # no examples: empty, zero counters
        t1 = time.perf_counter()
        batch = self._score(gen.outputs, examples, group_base)
        t2 = time.perf_counter()
        return batch, {"time/rollout": t1 - t0, "time/reward": t2 - t1, "engine": gen.stats.as_dict()}

    def _round_requests(self, prompt_idx: list[int], step: int, round_: int, group_base: int):
        """A round's examples, their sampling params (seeded by step and group) and its meta-prover hook."""
        cfg, r = self.cfg, self.cfg.rollout
        examples = [self.train_data[i] for i in prompt_idx]
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_new_tokens,
                                 n=r.group_size, seed=derive_seed("rollout", cfg.seed, step, group_base + j))
                  for j in range(len(examples))]
        mp = self._meta_prover(r.max_new_tokens, prompt_branches=True,
                               seed=derive_seed("meta-prover", cfg.seed, step, round_, group_base))
        return examples, params, mp

    def _score(self, outs, examples, group_base: int) -> RolloutBatch:
        """A round's engine outputs -> its packed batch: rewards, J from the branches (groups from group_base on)."""
        batch = build_batch(outs, reward_answers(self.reward_fn, examples),
                            [group_base + j for j in range(len(examples))],
                            self.reward_fn, termination_text=self.cfg.meta_prover.termination_text,
                            format_reward_fn=format_reward, format_weight=self.cfg.format_reward)
        if self.shaping:       # the training reward only: correct (accuracy) and J stay the outcome's
            batch.rewards += torch.tensor(shaping_bonus(outs, examples, self.shaping), dtype=batch.rewards.dtype)
        return batch

    def _group_stats(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dense group index of each trace (B,), whether each group's rewards differ (G,), the spread max - min of
        the token advantages the loss would use over each group's tokens (G,))."""
        g, mixed = _group_spread(batch)
        return g, mixed, _advantage_spread(batch, self.advantages(batch).advantages)[1]

    def _signal_groups(self, batch: RolloutBatch, stats=None) -> RolloutBatch:
        """The traces of batch's groups that carry a learning signal, by rl.dynamic_sampling_filter:

        "outcome": the group's rewards differ (DAPO; exactly the groups with non-zero GRPO advantages). "advantage":
        the group's traces differ in the advantage the loss gives their tokens, read at equal token positions
        (`_advantage_spread`), by more than rl.dynamic_sampling_min_spread. Under GRPO the two agree. Under MRT dense
        an outcome-tied group still has signal when its traces' episodes made different progress (token t of episode
        j gets alpha * prg_j): one trace right after its first episode and then spending more, another right only at
        its end. Traces that share one advantage profile (all right in one episode each: alpha * (r - J_-1) on every
        token; or the same J at the same boundaries) are only a baseline and are dropped, so the filter does not
        switch itself off when J_-1 = 0 gives nearly every first episode a bonus > 0."""
        g, mixed, spread = stats if stats is not None else self._group_stats(batch)
        rl = self.cfg.rl
        keep = mixed if rl.dynamic_sampling_filter == "outcome" else spread > rl.dynamic_sampling_min_spread
        return _select_groups(batch, g, keep)

    def _signal_counts(self, stats) -> dict:
        """Of the drawn groups (stats: `_group_stats`): how many are outcome-tied (all right or all wrong: their GRPO
        advantages are all zero), how many have no signal by their advantages, how many of the tied ones do (a
        progress spread), and the sum of the tied groups' advantage spreads; logged whatever the filter."""
        _, mixed, spread = stats
        signal, tied = spread > self.cfg.rl.dynamic_sampling_min_spread, ~mixed
        return {"zero_variance_groups": int(tied.sum()), "no_signal_groups": int((~signal).sum()),
                "tied_groups_with_signal": int((tied & signal).sum()), "tied_group_spread": _total(spread[tied])}

    # ---- advantages ---------------------------------------------------------------------------------------------
    def advantages(self, batch: RolloutBatch):
        """ONE `progress_advantages` call for the batch, on the batch's device."""
        rl = self.cfg.rl
        mrt = rl.algo == "mrt"
        return progress_advantages(**batch.advantage_inputs(), alpha=rl.alpha if mrt else 0.0,
                                   mode=rl.advantage_mode if mrt else "dense", scale_by_std=rl.scale_by_std,
                                   eps=rl.eps)

    # ---- one step -----------------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        t0 = time.perf_counter()
        self.model.train()
        batch, info = self.rollout(self.step)
        batch = batch.to(self.dist.device)        # the step's one host -> device copy; advantages stay there
        adv = self.advantages(batch)
        t_upd = time.perf_counter()
        stats, ok = self.update(batch, adv)
        info["lr"] = self.scheduler.get_last_lr()[0]      # the lr this step used
        with warnings.catch_warnings():   # a skipped step still advances the schedule (it is indexed by step)
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        t_end = time.perf_counter()
        rec = self._step_metrics(batch, adv, stats, info, t_upd, t_end, t0)
        rec["skipped"] = 0.0 if ok else 1.0
        self.bad_steps = 0 if ok else self.bad_steps + 1
        self.step += 1
        rec["step"] = self.step
        return rec

    def _same_count_on_every_rank(self, micro: list) -> list:
        """FSDP2 all-gathers parameters in every forward and backward, so every rank must run the same number of
        micro-batches (ranks differ in trace lengths, and dynamic sampling keeps different numbers of traces).
        A rank with fewer repeats its last micro-batch with an all-false mask: the collectives run, the loss and
        gradients get nothing from it."""
        if self.dist.strategy != "fsdp" or self.dist.world_size == 1:
            return micro
        most = max(self.dist.all_gather_objects(len(micro)))      # a collective: every rank, every step
        if not micro:       # no traces on this rank (optim.prompts_per_step < ranks): nothing to repeat
            return micro
        pad = dataclasses.replace(micro[-1], mask=torch.zeros_like(micro[-1].mask),
                                  advantages=torch.zeros_like(micro[-1].advantages))
        return micro + [pad] * (most - len(micro))

    def update(self, batch: RolloutBatch, adv) -> tuple[dict, bool]:
        """The policy update of one step: micro-batches, then rl.epochs_per_batch optimizer steps (mrt.update) ->
        (stats, whether every rank's loss and gradient norm were finite; if not, the step is skipped)."""
        cfg, settings = self.cfg, self.update_settings
        micro = micro_batches(batch, adv.advantages, cfg.optim.micro_batch_tokens, device=self.dist.device)
        micro = self._same_count_on_every_rank(micro)
        n = self._reduce_by_name({"tokens": batch.num_completion_tokens, "traces": len(batch)})
        # rl.recompute_old_logp: old log-probs from the training forward (mrt.update); kl_old = engine - training.
        kl_old = recompute_old_logp(self.train_model, self.model, micro, temperature=settings.temperature) \
            if cfg.rl.recompute_old_logp else None
        for _ in range(cfg.rl.epochs_per_batch):
            stats = run_update(self.train_model, self.model, self.optimizer, micro, settings,
                               num_tokens=int(n["tokens"]), num_seqs=int(n["traces"]),
                               world_size=self.dist.world_size,
                               ref_logp_fn=self._ref_logp if self.ref_model is not None else None)
            ok = self._reduce_by_name({"non_finite": 0.0 if stats.pop("_finite") else 1.0})["non_finite"] == 0
            if not ok:
                break
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if kl_old is not None:    # the same measure as without the recompute: engine vs training log-probs
            diff, count = kl_old
            stats["approx_kl_old"] = diff / max(count, 1)
        return stats, ok

    def _ref_logp(self, mb):
        from mrt_kernels import fused_linear_logprobs
        from .models import packed_metadata
        with torch.no_grad():
            h = self.ref_model(mb.input_ids, mb.positions, packed_metadata(mb.seq_lens, self.dist.device))
            return fused_linear_logprobs(h, self.ref_model.lm_head_weight, mb.targets,
                                         temperature=self.update_settings.temperature)

    def _step_metrics(self, batch, adv, stats, info, t_upd, t_end, t0) -> dict:
        """Rank-local sums, reduced by name (one all-reduce) -> global means."""
        g = self._reduce_by_name(self._local_sums(batch, adv, stats, info))
        B, T, rl_time = max(g["traces"], 1), max(g["tokens"], 1), info["time/rollout"]
        rec = {"kind": "train"}
        rec.update({k: g[k] / B for k in ("reward_kept", "regret", "regret_normalized", "episodes", "J_prompt",
                                          "truncated")})
        rec.update({k: g[k] / max(g["drawn"], 1) for k in ("reward", "accuracy")})
        rec["length"] = g["tokens"] / B
        rec.update({k: g[k] / T for k in ("entropy", "clip_fraction", "kl", "approx_kl_old")})
        rec.update({
            "zero_variance_groups": g["zero_variance_groups"] / max(g["groups"], 1),
            "no_signal_groups": g["no_signal_groups"] / max(g["groups"], 1),
            "tied_groups_with_signal": g["tied_groups_with_signal"] / max(g["groups"], 1),
            "tied_group_spread": g["tied_group_spread"] / max(g["zero_variance_groups"], 1),
            "prompts_generated": g["prompts_generated"], "sampling_rounds": g["rounds"] / self.dist.world_size,
            "prefix_cache_hit_rate": g["prompt_tokens_cached"] / max(g["prompt_tokens_cached"]
                                                                      + g["prompt_tokens_computed"], 1),
            "generated_tokens": g["generated_tokens"], "branch_prompt_tokens_computed":
                g["branch_prompt_tokens_computed"], "preemptions": g["preemptions"],
            "loss": g["loss"], "grad_norm": stats.get("grad_norm", float("nan")),
            "ratio_max": stats.get("ratio_max", float("nan")), "lr": info["lr"],
            "time/rollout": rl_time, "time/reward": info["time/reward"], "time/update": t_end - t_upd,
            "time/step": t_end - t0, "tokens_per_s": g["generated_tokens"] / max(rl_time, 1e-9),
            "update_tokens_per_s": g["tokens"] / max(t_end - t_upd, 1e-9),
        })
        for key in [k for k in g if k.startswith("progress_sum/")]:
            j = key.split("/")[1]
            rec[f"episode_share/{j}"] = g[f"progress_count/{j}"] / B      # traces that have a j-th episode
            if g[f"progress_count/{j}"] > 0:
                rec[f"progress/episode_{j}"] = g[key] / g[f"progress_count/{j}"]
        return rec

    def _reduce_by_name(self, sums: dict) -> dict:
        """{name: this rank's sum} -> {name: the sum over ranks} (one all-reduce; every rank, the same names)."""
        return dict(zip(sums, self.dist.all_reduce_sum(list(sums.values()))))

    def _local_sums(self, batch: RolloutBatch, adv, stats: dict, info: dict) -> dict:
        """This rank's sums of the step's metrics, by name (every rank makes the same keys in the same order)."""
        eng, n_tok = info["engine"], batch.num_completion_tokens
        local = {
            "traces": len(batch), "reward_kept": _total(batch.rewards), **info["drawn"],
            # the final episode's J is the trace's own outcome: 1 - correct (module docstring)
            "regret": _total(adv.regret) + len(batch) - _total(batch.correct),
            "regret_normalized": sum(self._normalised_regret(batch)),
            "tokens": n_tok, "episodes": batch.episode_ends.numel(), "J_prompt": _total(batch.J_prompt),
            "truncated": int(batch.truncated.sum()),
            "prompts_generated": info["prompts_generated"], "rounds": info["rounds"],
            "entropy": stats.get("entropy", 0.0) * n_tok, "clip_fraction": stats.get("clip_fraction", 0.0) * n_tok,
            "kl": stats.get("kl", 0.0) * n_tok, "approx_kl_old": stats.get("approx_kl_old", 0.0) * n_tok,
            "loss": stats.get("loss", float("nan")),
            "prompt_tokens_cached": eng.get("prompt_tokens_cached", 0),
            "prompt_tokens_computed": eng.get("prompt_tokens_computed", 0),
            "generated_tokens": eng.get("generated_tokens", 0) + eng.get("branch_generated_tokens", 0),
            "branch_prompt_tokens_computed": eng.get("branch_prompt_tokens_computed", 0),
            "preemptions": eng.get("preemptions", 0),
        }
        local.update(_progress_by_episode(batch, adv.progress, self._logged_episodes(batch)))
        return local

    def _logged_episodes(self, batch: RolloutBatch) -> int:
        """How many episode indices the progress metrics cover: episodes.max_episodes (later boundaries merge, so no
        trace has more), else the most episodes of any trace on any rank this step (a collective)."""
        if self.cfg.episodes.max_episodes is not None:
            return self.cfg.episodes.max_episodes
        most = int(batch.episode_offsets.diff().max()) if len(batch) else 0
        return max(self.dist.all_gather_objects(most))

    def _normalised_regret(self, batch: RolloutBatch) -> list[float]:
        """Normalised regret (docs/algorithm.md) of each trace at the run's budget C0 = prompt + max_new_tokens +
        answer tokens.

        The J-vs-tokens curve: J at each boundary b (x = prompt + b + the meta-prover's termination text and answer
        budget), then the trace's own outcome at its end. Unlike the cumulative regret (a sum over episodes, which
        a trace lowers by having fewer of them) it is an area per token, fair across lengths."""
        from .eval.metrics import normalised_regret
        extra = len(self.termination_ids) + self.cfg.meta_prover.answer_max_tokens
        P, L, eo = batch.prompt_lens.tolist(), batch.completion_lens.tolist(), batch.episode_offsets.tolist()
        ends, J, correct = batch.episode_ends.tolist(), batch.J.tolist(), batch.correct.tolist()
        out = []
        for b in range(len(batch)):
            xs = [P[b] + e + extra for e in ends[eo[b]:eo[b + 1]]] + [P[b] + L[b] + extra]
            js = J[eo[b]:eo[b + 1]] + [correct[b]]
            out.append(normalised_regret(xs, js, P[b] + self.cfg.rollout.max_new_tokens + extra))
        return out

    # ---- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out accuracy and regret (module docstring), over all ranks' shares of eval.held_out problems."""
        cfg, e = self.cfg, self.cfg.eval
        self._sync_generation_model()
        lo, hi = self.dist.shard(len(self.eval_data))
        ex = self.eval_data[lo:hi]
        L = e.max_new_tokens or cfg.rollout.max_new_tokens
        params = [SamplingParams(temperature=e.temperature, top_p=cfg.rollout.top_p, max_tokens=L, n=e.samples,
                                 seed=derive_seed("eval", cfg.seed, lo + j)) for j in range(len(ex))]
        mp = self._meta_prover(L, prompt_branches=False, seed=derive_seed("eval-meta-prover", cfg.seed, lo))
        outs = self._generate([x.prompt_ids for x in ex], params, mp).outputs     # no examples: empty
        batch = build_batch(outs, reward_answers(self.reward_fn, ex), list(range(len(ex))), self.reward_fn,
                            termination_text=cfg.meta_prover.termination_text)
        local = {"n": len(batch), "accuracy": _total(batch.correct),
                 "regret": _total(1.0 - batch.J) + len(batch) - _total(batch.correct),
                 "regret_normalized": sum(self._normalised_regret(batch)),
                 "length": batch.num_completion_tokens, "episodes": batch.episode_ends.numel()}
        g = self._reduce_by_name(local)
        n = max(g.pop("n"), 1)
        return {"kind": "eval", "step": self.step, **{f"eval/{k}": v / n for k, v in g.items()}}

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def save(self) -> str | None:
        extra = {"bad_steps": self.bad_steps, "data_order": self._data_order()}
        if self.dist.strategy == "fsdp":
            sync_generation_model(self.train_model, self.gen_model)
        optim_state = gathered_optimizer_state(self.train_model, self.optimizer, self.dist)   # FSDP2: collective
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(self.cfg.checkpoint_dir, self.step, self.lora or self.gen_model,
                                        tokenizer=self.tokenizer, optimizer_state=optim_state, scheduler=self.scheduler,
                                        config=self.cfg, extra=extra, keep_last=self.cfg.checkpoint.keep_last)
        self.dist.barrier()
        return path

    def _data_order(self) -> dict:
        """What the data order depends on (step_prompts): a resumed run on other data draws other prompts."""
        return {"seed": self.cfg.seed, "rows": len(self.train_data),
                "prompts_per_step": self.cfg.optim.prompts_per_step}

    def resume(self, log=None) -> bool:
        """Load the newest good checkpoint of checkpoint_dir if any; returns whether one was loaded.

        Rank 0 checks the checkpoints against their manifests (mrt.checkpoint.find_resumable: a broken one is named
        and skipped in one line) and, with checkpoint.convert_legacy, converts old-layout ones first; every rank then
        loads the folder it names."""
        say = log or (lambda msg: print(msg, flush=True))
        root, found = self.cfg.checkpoint_dir, (None, None)
        if self.dist.is_main:
            try:
                if self.cfg.checkpoint.convert_legacy:
                    ckpt.convert_legacy_checkpoints(root, say)
                found = (ckpt.find_resumable(root, say), None)
            except ckpt.BrokenCheckpoint as exc:
                found = (None, exc)
        path, err = self.dist.broadcast_object(found)
        if err is not None:
            raise err
        if path is None:
            return False
        fsdp = self.dist.strategy == "fsdp"
        state = ckpt.load_checkpoint(path, None if fsdp else (self.lora or unwrap(self.model)),
                                     optimizer=None if fsdp else self.optimizer,
                                     scheduler=self.scheduler, restore_rng=False, check=False)
        order = state["extra"].get("data_order")
        if order is not None and order != self._data_order():
            say(f"data: the checkpoint was made with {order}, this run has {self._data_order()}: the prompts of the "
                "steps to come differ from the interrupted run's")
        if fsdp:      # full weights and optimizer state, sharded again (mrt.distributed)
            load_fsdp_checkpoint(self.train_model, self.gen_model, self.optimizer, path, state["optimizer"])
        self.step = int(state["step"])
        self.bad_steps = int(state["extra"].get("bad_steps", 0))
        _seed_all(derive_seed("global-rng", self.cfg.seed, self.dist.rank, self.step))
        return True

    # ---- the run ------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, d = self.cfg, self.dist
        if cfg.checkpoint.resume and self.resume(None if d.is_main else (lambda msg: None)):
            resumed = True
        else:
            resumed = False
        if d.is_main:
            cfg.save(os.path.join(cfg.logging.out_dir, "config.yaml"))
        skipped = write_skip_report(self.data_sources, cfg.logging.out_dir) if d.is_main else None
        log = MetricsLogger(cfg.logging.out_dir, rank=d.rank, total_steps=cfg.optim.steps, initial_step=self.step,
                            progress_bar=cfg.logging.progress_bar, tensorboard=cfg.logging.tensorboard,
                            wandb=cfg.logging.wandb, run_config=cfg.to_dict())
        log.info(f"mrt: {cfg.rl.algo} ({cfg.rl.advantage_mode}) on {len(self.train_data)} prompts, "
                 f"{cfg.optim.steps} steps x {cfg.optim.prompts_per_step} prompts x {cfg.rollout.group_size} "
                 f"samples, {d.world_size} rank(s) on {d.device}" + (f"; resumed at step {self.step}" if resumed
                                                                     else ""))
        if skipped:
            log.info("data: dropped " + ", ".join(f"{n}: {len(s.overlong_rows)} overlong, {s.skipped} malformed"
                                                    for n, s in self.data_sources.items()) + f" rows (see {skipped})")
        result = {}
        first = self.evaluate()
        log.log(first, advance=False)
        log.info(f"held-out before: accuracy {first['eval/accuracy']:.3f}, regret {first['eval/regret']:.3f}")
        result["before"] = first
        interrupted = False
        try:
            while self.step < cfg.optim.steps:
                rec = self.train_step()
                log.log(rec)
                if rec["skipped"]:
                    log.info(f"step {self.step}: non-finite loss or gradient (loss {rec['loss']}, grad norm "
                             f"{rec['grad_norm']}); step skipped ({self.bad_steps} in a row)")
                    if self.bad_steps >= MAX_BAD_STEPS:
                        raise TrainingStopped(f"{self.bad_steps} steps in a row had a non-finite loss or gradient; "
                                              "stopping (lower optim.lr or check the data)")
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.optim.steps:
                    log.log(self.evaluate(), advance=False)
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                    self.save()
        except KeyboardInterrupt:
            interrupted = True
            log.info(f"interrupted: writing a checkpoint of step {self.step}")
            path = self.save()
            log.info(f"checkpoint written to {path}; resume with --checkpoint.resume")
        if not interrupted:
            path = self.save()
            last = self.evaluate()
            log.log(last, advance=False)
            result["after"] = last
            log.info(f"held-out after:  accuracy {last['eval/accuracy']:.3f}, regret {last['eval/regret']:.3f} "
                     f"(before {first['eval/accuracy']:.3f}, {first['eval/regret']:.3f})")
            log.info(f"checkpoint: {path}")
        plots = log.close(plots=cfg.logging.plots and not interrupted)
        if plots:
            log.info("plots: " + ", ".join(plots))
        result.update(interrupted=interrupted, step=self.step, records=log.records)
        return result


def _total(x: torch.Tensor) -> float:
    """A float sum of a tensor, accumulated in float64 (metric sums of B- or E-sized values)."""
    return float(x.double().sum())


def _progress_by_episode(batch: RolloutBatch, progress: torch.Tensor, num_indices: int) -> dict:
    """{"progress_sum/j": ..., "progress_count/j": ...} for episode indices j < num_indices (progress (E,) is in the
    batch's episode order). Every rank makes the same keys, in the same order, so they can be reduced by name."""
    n_ep = batch.episode_offsets.diff()                                                      # (B,)
    owner = torch.repeat_interleave(torch.arange(len(batch), device=n_ep.device), n_ep)      # (E,) trace of each
    j = torch.arange(owner.numel(), device=n_ep.device) - batch.episode_offsets[owner]       # (E,) index in trace
    keep = j < num_indices
    sums = torch.zeros(num_indices, dtype=torch.float64, device=n_ep.device).index_add_(
        0, j[keep], progress[keep].double()).tolist()
    counts = torch.bincount(j[keep], minlength=num_indices).tolist()
    return {**{f"progress_sum/{i}": sums[i] for i in range(num_indices)},
            **{f"progress_count/{i}": counts[i] for i in range(num_indices)}}


def _group_spread(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense group index of each trace (B,), whether each group's rewards differ (G,))."""
    _, g = torch.unique(batch.group_ids, return_inverse=True)
    n = int(g.max()) + 1 if len(batch) else 0
    lo = torch.full((n,), float("inf"), device=g.device).scatter_reduce(0, g, batch.rewards, "amin")
    hi = torch.full((n,), float("-inf"), device=g.device).scatter_reduce(0, g, batch.rewards, "amax")
    return g, lo != hi


def _advantage_spread(batch: RolloutBatch, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _num_groups(batch: RolloutBatch) -> int:
    return int(torch.unique(batch.group_ids).numel())


def _select_groups(batch: RolloutBatch, g: torch.Tensor, keep: torch.Tensor) -> RolloutBatch:
    """The traces of batch whose group is kept (g: dense group index of each trace (B,), keep: (G,) bool)."""
    return batch.select(keep[g].nonzero().flatten())


def _add_info(info: dict, more: dict) -> None:
    """Accumulate a later round's timings and engine counters into info."""
    for k in ("time/rollout", "time/reward"):
        info[k] += more[k]
    for k, v in more["engine"].items():
        info["engine"][k] = info["engine"].get(k, 0) + v


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> dict:
    """`train.py [--config FILE] [--section.key VALUE ...]`."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config: needs a file")
        path = argv[i + 1]
        del argv[i:i + 2]
    else:
        for i, a in enumerate(argv):
            if a.startswith("--config="):
                path = a.split("=", 1)[1]
                del argv[i]
                break
    if "--resume" in argv:       # shorthand of --checkpoint.resume
        argv.remove("--resume")
        argv.append("--checkpoint.resume")
    check = "--check" in argv        # validate everything, say what would run, and stop (mrt.check)
    if check:
        argv.remove("--check")
    cfg = load_config(path, argv)
    if check:
        from .check import check_run
        print(check_run(cfg), flush=True)
        return {"checked": True}
    d = init_distributed(cfg.distributed.backend)
    try:
        return Trainer(cfg, d).train()
    finally:
        from .distributed import cleanup
        cleanup()
