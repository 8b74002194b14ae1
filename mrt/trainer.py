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
5. the step's sums (`mrt.step_metrics`: one all-reduce, one read to the host), logged (`mrt.metrics_log`);
   checkpoints (`mrt.checkpoint`).
Steps 1-3 up to the packed batch, with dynamic sampling, are `mrt.sampling`; the held-out evaluation (before and
after, and every `eval.every` steps) is `mrt.held_out`; the command line is `mrt.cli.train_args`.
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
from .cli import train_args
from .config import Config, load_config
from .data import load_run_data, write_skip_report
from .distributed import (Distributed, gathered_optimizer_state, init_distributed, load_fsdp_checkpoint,
                          sync_generation_model, unwrap, wrap_model)
from .hub import load_checked_tokenizer, load_model, resolve_model_path
from .episodes import make_segmenter
from .errors import UserError
from .meta_prover import MetaProver
from .metrics_log import MetricsLogger
from .models.lora_model import apply_lora
from .held_out import evaluate_held_out
from .regret import batch_normalised_regret, batch_regret
from .rewards import get_reward
from .reward_fn import Shaping
from .rollout import Engine
from .rollout_batch import RolloutBatch, micro_batches
from .sampling import Sampler
from .seeds import derive_seed
from .step_metrics import StepSums, UpdateSums, progress_by_episode, step_record, sum_over_ranks
from .update import UpdateSettings, make_optimizer, make_scheduler, recompute_old_logp, run_update

MAX_BAD_STEPS = 3


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
        dtype = cfg.model.dtype             # a name; the loader maps it (CausalLM.from_pretrained)
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
        # Generation through a lambda: the engine call the sampler makes is whatever self._generate is at the time.
        self.sampler = Sampler(cfg, d, self.train_data, generate=lambda *a: self._generate(*a),
                               meta_prover=self._meta_prover, advantages=self.advantages, reward_fn=self.reward_fn,
                               shaping=self.shaping)
        self.step = 0
        self.bad_steps = 0

    # ---- data ---------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        data = load_run_data(self.cfg, self.tokenizer)      # the same reading as `train.py --check` (mrt.check)
        # data_sources: their dropped rows go to the run folder (train())
        self.train_data, self.eval_data, self.data_sources = data.train, data.held_out, data.sources

    def step_prompts(self, step: int) -> list[int]:
        """Indices of step's B prompts (all ranks): a permutation per pass over the data, seeded (mrt.sampling)."""
        return self.sampler.step_prompts(step)

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

    def rollout(self, step: int) -> tuple[RolloutBatch, dict]:
        """This rank's traces of step -> (RolloutBatch, timings, engine counters and the drawn groups' sums), with
        dynamic sampling's rounds (mrt.sampling)."""
        self._sync_generation_model()
        return self.sampler.rollout(step)

    def spare_prompts(self, step: int, round_: int, n: int) -> list[int]:
        """n extra prompt indices for dynamic sampling's round `round_` of step (mrt.sampling)."""
        return self.sampler.spare_prompts(step, round_, n)

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
        # Host-side parts of the metrics, read off the host batch before its copy: no device -> host reads.
        regret_normalized = sum(self._normalised_regret(batch))
        num_episodes = self._logged_episodes(batch)
        batch = batch.to(self.dist.device)        # the step's one host -> device copy; advantages stay there
        adv = self.advantages(batch)
        t_upd = time.perf_counter()
        upd, ok = self.update(batch, adv)
        lr = self.scheduler.get_last_lr()[0]      # the lr this step used
        with warnings.catch_warnings():   # a skipped step still advances the schedule (it is indexed by step)
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        t_end = time.perf_counter()
        sums = self._step_sums(batch, adv, upd, info, regret_normalized, num_episodes)
        times = {"time/rollout": info["time/rollout"], "time/reward": info["time/reward"],
                 "time/update": t_end - t_upd, "time/step": t_end - t0}
        rec = step_record(sums.reduce(self.dist), world_size=self.dist.world_size, lr=lr, times=times)
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

    def update(self, batch: RolloutBatch, adv) -> tuple[UpdateSums, bool]:
        """The policy update of one step: micro-batches, then rl.epochs_per_batch optimizer steps (mrt.update) ->
        (the last epoch's sums, whether every rank's loss and gradient norm were finite; if not, the step is
        skipped). One host read an epoch: the finiteness every rank must agree on before the optimizer steps."""
        cfg, settings = self.cfg, self.update_settings
        micro = micro_batches(batch, adv.advantages, cfg.optim.micro_batch_tokens, device=self.dist.device)
        micro = self._same_count_on_every_rank(micro)
        n = sum_over_ranks(self.dist, {"tokens": batch.num_completion_tokens, "traces": len(batch)})
        # rl.recompute_old_logp: old log-probs from the training forward (mrt.update); kl_old = engine - training.
        kl_old = recompute_old_logp(self.train_model, self.model, micro, temperature=settings.temperature) \
            if cfg.rl.recompute_old_logp else None
        for _ in range(cfg.rl.epochs_per_batch):
            sums = run_update(self.train_model, self.model, self.optimizer, micro, settings,
                              num_tokens=int(n["tokens"]), num_seqs=int(n["traces"]),
                              world_size=self.dist.world_size,
                              ref_logp_fn=self._ref_logp if self.ref_model is not None else None)
            ok = sum_over_ranks(self.dist, {"non_finite": ~sums.finite})["non_finite"] == 0
            if not ok:
                break
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if kl_old is not None:    # the same measure as without the recompute: engine vs training log-probs
            sums.approx_kl_old = kl_old[0]
        return sums, ok

    def _ref_logp(self, mb):
        from mrt_kernels import fused_linear_logprobs
        from .models import packed_metadata
        with torch.no_grad():
            h = self.ref_model(mb.input_ids, mb.positions, packed_metadata(mb.seq_lens, self.dist.device))
            return fused_linear_logprobs(h, self.ref_model.lm_head_weight, mb.targets,
                                         temperature=self.update_settings.temperature)

    def _step_sums(self, batch: RolloutBatch, adv, upd: UpdateSums, info: dict, regret_normalized: float,
                   num_episodes: int) -> StepSums:
        """This rank's sums of the step (mrt.step_metrics), tensors where they were computed."""
        eng = info["engine"]
        progress_sum, progress_count = progress_by_episode(batch, adv.progress, num_episodes)
        return StepSums(
            traces=len(batch), reward_kept=batch.rewards.double().sum(), drawn=info["drawn"],
            regret=batch_regret(batch), regret_normalized=regret_normalized, tokens=batch.num_completion_tokens,
            episodes=batch.episode_ends.numel(), J_prompt=batch.J_prompt.double().sum(),
            truncated=batch.truncated.sum(), prompts_generated=info["prompts_generated"], rounds=info["rounds"],
            entropy=upd.entropy, clip_fraction=upd.clip_fraction, kl=upd.kl, approx_kl_old=upd.approx_kl_old,
            loss=upd.loss, prompt_tokens_cached=eng.get("prompt_tokens_cached", 0),
            prompt_tokens_computed=eng.get("prompt_tokens_computed", 0),
            generated_tokens=eng.get("generated_tokens", 0) + eng.get("branch_generated_tokens", 0),
            branch_prompt_tokens_computed=eng.get("branch_prompt_tokens_computed", 0),
            preemptions=eng.get("preemptions", 0), progress_sum=progress_sum, progress_count=progress_count,
            local={"grad_norm": upd.grad_norm, "ratio_max": upd.ratio_max})

    def _logged_episodes(self, batch: RolloutBatch) -> int:
        """How many episode indices the progress metrics cover: episodes.max_episodes (later boundaries merge, so no
        trace has more), else the most episodes of any trace on any rank this step (a collective)."""
        if self.cfg.episodes.max_episodes is not None:
            return self.cfg.episodes.max_episodes
        most = int(batch.episode_offsets.diff().max()) if len(batch) else 0
        return max(self.dist.all_gather_objects(most))

    def _normalised_regret(self, batch: RolloutBatch) -> list[float]:
        """Normalised regret (mrt.regret) of each trace at the run's budget: prompt + max_new_tokens + the
        meta-prover's termination text and answer budget."""
        return batch_normalised_regret(batch, extra_tokens=self._answer_tokens(),
                                       max_new_tokens=self.cfg.rollout.max_new_tokens)

    def _answer_tokens(self) -> int:
        """Tokens a J measurement adds after a prefix: the termination text and the answer budget."""
        return len(self.termination_ids) + self.cfg.meta_prover.answer_max_tokens

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Held-out accuracy and regret over all ranks' shares of eval.held_out problems (mrt.held_out)."""
        self._sync_generation_model()
        return {"kind": "eval", "step": self.step,
                **evaluate_held_out(self.cfg, self.dist, self.eval_data, generate=self._generate,
                                    meta_prover=self._meta_prover, reward_fn=self.reward_fn,
                                    extra_tokens=self._answer_tokens())}

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


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> dict:
    """`train.py [--config FILE] [--check] [--resume] [--section.key VALUE ...]` (mrt.cli.train_args)."""
    import sys
    path, argv, check = train_args(sys.argv[1:] if argv is None else argv)
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
