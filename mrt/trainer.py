"""The training loop (MRT.md, "One training step"), for `rl.algo: mrt` and its GRPO baseline (`rl.algo: grpo`: the same
code with the progress bonus off, and no meta-prover unless `meta_prover.enabled`).

One step:
1. this rank's share of B prompts (a seeded permutation, so every rank and a resumed run agree), G traces each, by
   the engine on the training model's own parameters (the prefix cache is dropped first: the weights changed);
2. online segmentation and meta-prover forks through the engine hook (`mrt.meta_prover`);
3. rewards of traces and branch answers, J, progress and advantages (ONE `progress_advantages` call for the batch);
4. packed update by micro-batches with gradient accumulation (`mrt.update`), optimizer and schedule step;
5. metrics (`mrt.metrics_log`), checkpoints (`mrt.checkpoint`).
Held-out evaluation (before and after, and every `eval.every` steps): greedy (by default) traces with the meta-prover
at their boundaries; accuracy, and regret = sum over the trace's episodes of (1 - J), the final episode's J being
the trace's own outcome (so a correct trace without corrections has regret 0, a wrong one at least 1).
Faults: a non-finite loss or gradient norm skips the step (logged); MAX_BAD_STEPS in a row stop the run. Ctrl-C
writes a checkpoint of the last completed step and returns cleanly.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings

import numpy as np
import torch

from mrt_kernels import progress_advantages

from . import checkpoint as ckpt
from .config import Config, ConfigError, load_config
from .data import load_prompts, write_skip_report
from .distributed import Distributed, init_distributed, sync_generation_model, unwrap, wrap_model
from .hub import load_checked_tokenizer, load_model, resolve_model_path
from .episodes import make_segmenter
from .meta_prover import MetaProver
from .metrics_log import MetricsLogger
from .models import CausalLM
from .rewards import format_reward, get_reward
from .rollout import Engine, SamplingParams
from .rollout_batch import build_batch, micro_batches
from .update import make_optimizer, make_scheduler, run_update

MAX_BAD_STEPS = 3
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. non-finite losses several steps in a row)."""


class Trainer:
    def __init__(self, cfg: Config, dist_env: Distributed | None = None):
        if cfg.rl.normalize_progress:
            raise ConfigError("rl.normalize_progress: not supported by this trainer yet; set it to false")
        self.cfg = cfg
        self.dist = dist_env or init_distributed(cfg.distributed.backend)
        d = self.dist
        _seed_all(cfg.seed + d.rank)
        # Model folder and tokenizer first, then the data: a user's mistake in any of them ends the run before the
        # engine is sized or a step is taken (one-line errors, mrt.errors). A hub id is downloaded (mrt.hub).
        path = resolve_model_path(cfg.model.path, revision=cfg.model.revision)
        dtype = _DTYPES[cfg.model.dtype]
        self.model = load_model(path, dtype=dtype, device=d.device)
        tok_key = "model.tokenizer_path" if cfg.model.tokenizer_path else "model.path"
        tok_path = resolve_model_path(cfg.model.tokenizer_path, revision=cfg.model.revision, key=tok_key) \
            if cfg.model.tokenizer_path else path
        self.tokenizer = load_checked_tokenizer(tok_path, self.model.config.vocab_size, key=tok_key)
        self._load_data()
        self.model.gradient_checkpointing = cfg.model.gradient_checkpointing
        self.train_model = wrap_model(self.model, d, cfg.distributed.strategy)
        # FSDP2: generation runs on an unsharded copy filled from the shards each step (see mrt.distributed).
        self.gen_model = CausalLM.from_pretrained(path, dtype=dtype, device=d.device) if d.strategy == "fsdp" \
            else self.model
        self.ref_model = None
        if cfg.rl.kl_coef > 0:
            self.ref_model = CausalLM.from_pretrained(path, dtype=dtype, device=d.device).requires_grad_(False)
        r = cfg.rollout
        self.engine = Engine(self.gen_model, self.tokenizer, block_size=r.block_size, num_blocks=r.num_blocks,
                             max_num_seqs=r.max_num_seqs, max_num_batched_tokens=r.max_num_batched_tokens,
                             enable_prefix_caching=r.enable_prefix_caching, memory_fraction=r.memory_fraction)
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, cfg.optim.steps)
        self.reward_fn = get_reward(cfg.reward)
        self.segmenter = make_segmenter(cfg.episodes)
        self.termination_ids = self.tokenizer(cfg.meta_prover.termination_text, add_special_tokens=False)["input_ids"]
        self.stop_ids = list(self.model.config.eos_token_ids or [])
        self.autocast = torch.bfloat16 if d.device.type == "cuda" and dtype == torch.float32 else None
        self.step = 0
        self.bad_steps = 0

    # ---- data ---------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        self.train_data = load_prompts(cfg.data, self.tokenizer, seed=cfg.seed)
        self.data_sources = {"train": self.train_data}     # their dropped rows go to the run folder (train())
        n_eval = cfg.eval.held_out
        if cfg.eval.path is not None:
            self.data_sources["eval"] = load_prompts(cfg.data, self.tokenizer, path=cfg.eval.path, max_rows=n_eval)
            self.eval_data = self.data_sources["eval"].examples
        elif cfg.data.format == "task":
            self.eval_data = load_prompts(cfg.data, self.tokenizer, split="heldout", seed=cfg.seed,
                                          max_rows=n_eval).examples
        else:   # hold out the last rows of the training file
            if len(self.train_data) <= n_eval:
                raise ConfigError(f"eval.held_out: {n_eval} held-out rows leave none of the {len(self.train_data)} "
                                  "training rows; lower it or set eval.path")
            self.eval_data = self.train_data.examples[-n_eval:]
            self.train_data.examples = self.train_data.examples[:-n_eval]

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
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
            self._perm_cache = (epoch, torch.randperm(len(self.train_data), generator=g).tolist())
        return self._perm_cache[1]

    # ---- rollout ------------------------------------------------------------------------------------------------
    def _meta_prover(self, max_tokens: int, *, prompt_branches: bool, seed: int | None) -> MetaProver | None:
        mp = self.cfg.meta_prover
        if not mp.enabled:
            return None
        return MetaProver(self.segmenter, self.tokenizer, termination_ids=self.termination_ids, m=mp.m,
                          answer_max_tokens=mp.answer_max_tokens, temperature=mp.temperature, top_p=mp.top_p,
                          max_tokens=max_tokens, max_len=self.engine.max_model_len, stop_token_ids=self.stop_ids,
                          prompt_branches=prompt_branches and mp.prompt_branches, seed=seed)

    def _generate(self, prompts, params, hook):
        if self.dist.strategy == "fsdp":
            sync_generation_model(self.train_model, self.gen_model)
        self.engine.reset_prefix_cache()     # cached K/V were computed by the weights before the last update
        return self.engine.generate(prompts, params, hook=hook)

    def rollout(self, step: int):
        """This rank's traces of step -> (RolloutBatch, timings and engine counters)."""
        cfg, r = self.cfg, self.cfg.rollout
        idx = self.step_prompts(step)
        lo, hi = self.dist.shard(len(idx))
        mine = idx[lo:hi]
        examples = [self.train_data[i] for i in mine]
        base_seed = (cfg.seed * 1_000_003 + step * 10_007) % (2 ** 31)
        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_new_tokens,
                                 n=r.group_size, seed=base_seed + lo + j) for j in range(len(examples))]
        mp = self._meta_prover(r.max_new_tokens, prompt_branches=True, seed=base_seed + 7)
        before = dict(self.engine.stats)
        t0 = time.perf_counter()
        outs = self._generate([e.prompt_ids for e in examples], params, mp) if examples else []
        t1 = time.perf_counter()
        batch = build_batch(outs, [e.answer for e in examples], [lo + j for j in range(len(examples))],
                            (mp.boundaries if mp is not None else lambda i, j: []), self.reward_fn,
                            termination_text=cfg.meta_prover.termination_text, format_reward_fn=format_reward,
                            format_weight=cfg.format_reward)
        t2 = time.perf_counter()
        st = {k: self.engine.stats[k] - before.get(k, 0) for k in self.engine.stats}
        info = {"time/rollout": t1 - t0, "time/reward": t2 - t1, "engine": st}
        return batch, info

    # ---- advantages ---------------------------------------------------------------------------------------------
    def advantages(self, batch):
        rl = self.cfg.rl
        mrt = rl.algo == "mrt"
        inputs = batch.advantage_inputs()
        return progress_advantages(**inputs, alpha=rl.alpha if mrt else 0.0,
                                   mode=rl.advantage_mode if mrt else "dense", scale_by_std=rl.scale_by_std,
                                   eps=rl.eps)

    # ---- one step -----------------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg, step = self.cfg, self.step
        t0 = time.perf_counter()
        self.model.train()
        batch, info = self.rollout(step)
        adv = self.advantages(batch)
        t_upd = time.perf_counter()
        micro = micro_batches(batch, adv.advantages, cfg.optim.micro_batch_tokens, device=self.dist.device)
        n_tok, n_seq = self.dist.all_reduce_sum([batch.num_completion_tokens, len(batch)])
        stats = {}
        for _ in range(cfg.rl.epochs_per_batch):
            stats = run_update(self.train_model, self.model.lm_head_weight, self.optimizer, micro, cfg.rl,
                               temperature=cfg.rollout.temperature or 1.0,
                               grad_clip=cfg.optim.grad_clip, num_tokens=int(n_tok), num_seqs=int(n_seq),
                               world_size=self.dist.world_size, autocast_dtype=self.autocast,
                               ref_logp_fn=self._ref_logp if self.ref_model is not None else None)
            ok = self.dist.all_reduce_sum([0.0 if stats.pop("_finite") else 1.0])[0] == 0
            if not ok:
                break
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
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

    def _ref_logp(self, mb):
        from mrt_kernels import fused_linear_logprobs
        from .models import packed_metadata
        with torch.no_grad():
            h = self.ref_model(mb.input_ids, mb.positions, packed_metadata(mb.seq_lens, self.dist.device))
            return fused_linear_logprobs(h, self.ref_model.lm_head_weight, mb.targets,
                                         temperature=self.cfg.rollout.temperature or 1.0)

    def _step_metrics(self, batch, adv, stats, info, t_upd, t_end, t0) -> dict:
        """Rank-local sums -> global means (one all-reduce)."""
        traces = batch.traces
        max_ep = max(self.cfg.episodes.max_episodes or 8, 1)
        prg = adv.progress.tolist()
        reg = adv.regret.tolist()
        ep_sum, ep_cnt = [0.0] * max_ep, [0.0] * max_ep
        k = 0
        for t in traces:
            for j in range(len(t.boundaries)):
                if j < max_ep:
                    ep_sum[j] += prg[k]
                    ep_cnt[j] += 1
                k += 1
        eng = info["engine"]
        n_tok = batch.num_completion_tokens
        local = [len(traces), sum(t.reward for t in traces), sum(t.correct for t in traces),
                 sum(reg[b] + 1.0 - t.correct for b, t in enumerate(traces)), n_tok,
                 sum(len(t.boundaries) for t in traces), sum(t.J_prompt for t in traces),
                 stats.get("entropy", 0.0) * n_tok, stats.get("clip_fraction", 0.0) * n_tok,
                 stats.get("kl", 0.0) * n_tok, stats.get("approx_kl_old", 0.0) * n_tok,
                 eng.get("prompt_tokens_cached", 0), eng.get("prompt_tokens_computed", 0),
                 eng.get("generated_tokens", 0) + eng.get("branch_generated_tokens", 0),
                 eng.get("branch_prompt_tokens_computed", 0), eng.get("preemptions", 0),
                 sum(1 for t in traces if t.finish_reason == "length"), stats.get("loss", float("nan"))] \
            + ep_sum + ep_cnt
        g = self.dist.all_reduce_sum(local)
        B, T = max(g[0], 1), max(g[4], 1)
        rl_time = info["time/rollout"]
        rec = {
            "kind": "train",
            "reward": g[1] / B, "accuracy": g[2] / B, "regret": g[3] / B, "length": g[4] / B,
            "episodes": g[5] / B, "J_prompt": g[6] / B,
            "entropy": g[7] / T, "clip_fraction": g[8] / T, "kl": g[9] / T, "approx_kl_old": g[10] / T,
            "prefix_cache_hit_rate": g[11] / max(g[11] + g[12], 1),
            "generated_tokens": g[13], "branch_prompt_tokens_computed": g[14], "preemptions": g[15],
            "truncated": g[16] / B,
            "loss": g[17], "grad_norm": stats.get("grad_norm", float("nan")),
            "ratio_max": stats.get("ratio_max", float("nan")),
            "lr": self.scheduler.get_last_lr()[0],
            "time/rollout": rl_time, "time/reward": info["time/reward"], "time/update": t_end - t_upd,
            "time/step": t_end - t0,
            "tokens_per_s": g[13] / max(rl_time, 1e-9),
            "update_tokens_per_s": g[4] / max(t_end - t_upd, 1e-9),
        }
        for j in range(max_ep):
            if g[len(local) - 2 * max_ep + max_ep + j] > 0:
                rec[f"progress/episode_{j}"] = g[len(local) - 2 * max_ep + j] / g[len(local) - max_ep + j]
        return rec

    # ---- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out accuracy and regret (module docstring), over all ranks' shares of eval.held_out problems."""
        cfg, e = self.cfg, self.cfg.eval
        lo, hi = self.dist.shard(len(self.eval_data))
        ex = self.eval_data[lo:hi]
        L = e.max_new_tokens or cfg.rollout.max_new_tokens
        params = [SamplingParams(temperature=e.temperature, top_p=cfg.rollout.top_p, max_tokens=L, n=e.samples,
                                 seed=cfg.seed * 31 + lo + j) for j in range(len(ex))]
        mp = self._meta_prover(L, prompt_branches=False, seed=cfg.seed * 17 + lo)
        outs = self._generate([x.prompt_ids for x in ex], params, mp) if ex else []
        batch = build_batch(outs, [x.answer for x in ex], list(range(len(ex))),
                            (mp.boundaries if mp is not None else lambda i, j: []), self.reward_fn,
                            termination_text=cfg.meta_prover.termination_text)
        local = [len(batch), sum(t.correct for t in batch.traces),
                 sum(sum(1.0 - j for j in t.J) + 1.0 - t.correct for t in batch.traces),
                 batch.num_completion_tokens, sum(len(t.boundaries) for t in batch.traces)]
        g = self.dist.all_reduce_sum(local)
        n = max(g[0], 1)
        return {"kind": "eval", "step": self.step, "eval/accuracy": g[1] / n, "eval/regret": g[2] / n,
                "eval/length": g[3] / n, "eval/episodes": g[4] / n}

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def save(self) -> str | None:
        extra = {"bad_steps": self.bad_steps}
        if self.dist.strategy == "fsdp":
            sync_generation_model(self.train_model, self.gen_model)
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(self.cfg.checkpoint_dir, self.step, self.gen_model, tokenizer=self.tokenizer,
                                        optimizer=self.optimizer if self.dist.strategy != "fsdp" else None,
                                        scheduler=self.scheduler, config=self.cfg, extra=extra,
                                        keep_last=self.cfg.checkpoint.keep_last)
        self.dist.barrier()
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint of checkpoint_dir if any; returns whether one was loaded."""
        path = ckpt.latest_checkpoint(self.cfg.checkpoint_dir)
        if path is None:
            return False
        state = ckpt.load_checkpoint(path, unwrap(self.model) if self.dist.strategy != "fsdp" else None,
                                     optimizer=self.optimizer if self.dist.strategy != "fsdp" else None,
                                     scheduler=self.scheduler, restore_rng=False)
        if self.dist.strategy == "fsdp":
            raise ConfigError("checkpoint.resume: resuming an FSDP run is not supported yet")
        self.step = int(state["step"])
        self.bad_steps = int(state["extra"].get("bad_steps", 0))
        _seed_all(self.cfg.seed + self.dist.rank + self.step)
        return True

    # ---- the run ------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, d = self.cfg, self.dist
        if cfg.checkpoint.resume and self.resume():
            resumed = True
        else:
            resumed = False
        if d.is_main:
            cfg.save(os.path.join(cfg.logging.out_dir, "config.yaml"))
        skipped = write_skip_report(self.data_sources, cfg.logging.out_dir) if d.is_main else None
        log = MetricsLogger(cfg.logging.out_dir, rank=d.rank, total_steps=cfg.optim.steps, initial_step=self.step,
                            progress_bar=cfg.logging.progress_bar, tensorboard=cfg.logging.tensorboard)
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
    cfg = load_config(path, argv)
    d = init_distributed(cfg.distributed.backend)
    try:
        return Trainer(cfg, d).train()
    finally:
        from .distributed import cleanup
        cleanup()
