"""Our GRPO against TRL's GRPOTrainer (the peer) on the same model, task, prompts and settings, for the same samples.

Both train mrt/assets/tiny_arithmetic_model (the preset configs/tiny_arithmetic_mrt.yaml) on the synthetic arithmetic task's training problems, with the task's verifier as
the only reward, for `--steps` steps of B prompts x G samples (the embedded default's B, G, lengths, temperature,
lr, AdamW and schedule, from mrt.config). Matched on purpose:
- prompts: TRL gets our trainer's exact prompt texts in our trainer's exact order (its dataset is not shuffled), and
  the token ids are checked equal to ours;
- optimizer and schedule: TRL is handed our own AdamW (no decay on 1-D tensors) and our LambdaLR warmup + cosine
  (`mrt.update.make_optimizer` / `make_scheduler`), so the learning rate of every step is the same;
- loss: token-level clipped surrogate with clip-low/high 0.2/0.28, normalised by the batch's token count (TRL
  `loss_type="dapo"` = our `token_mean`), no KL, one update per batch, group std scaling with TRL's eps (1e-4) in both;
- our GRPO runs without the meta-prover (`meta_prover.enabled false`): TRL has none, and GRPO does not use it.
What could not be matched is printed and written to the JSON (`unmatched`). Held-out accuracy after training is
measured for the base model and both runs by the same code (`mrt.eval.run`, the same problems, samples, temperature
and seed): pass@1 of sampled traces at the training length. Wall time: the training loop alone (our steps' time/step
sum; TRL's `trainer.train()`) and each whole run with model loading.

    python benchmarks/learning_vs_trl.py --seeds 3                         # the default's steps, 512 held-out problems
    python benchmarks/learning_vs_trl.py --steps 3 --problems 32 --samples 2   # a smoke run
Over several seeds it also prints mean +- 95% t-intervals and ours minus TRL paired by seed.
TRL is optional (`pip install trl`, or the `bench` extra); without it only our side runs, and it says so.
Writes bench_results/learning_vs_trl.json and the runs under runs/learning_vs_trl/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mrt.config import load_config  # noqa: E402

PRESET = ROOT / "configs" / "tiny_arithmetic_mrt.yaml"   # the task TRL's side is compared on

TRL_MISSING = ("TRL is not installed, so its GRPOTrainer is skipped: install it with `.venv/bin/pip install trl` "
               "(the `bench` extra of pyproject.toml) to run the comparison")
UNMATCHED = [
    "sampling: our engine draws with counter-based seeded noise, TRL with transformers' generate() and torch's RNG: "
    "the same distribution (temperature, top-p 1, no top-k), different draws",
    "old log-probs: ours come from the rollout engine's sampler, TRL's are the training forward's own (detached), "
    "so its ratio is exactly 1 on the single update; ours is 1 up to float rounding of two forwards",
    "batching: ours packs the batch without padding in micro-batches of optim.micro_batch_tokens tokens and "
    "accumulates gradients; TRL pads the B x G sequences into one batch (the same loss up to float rounding)",
    "the max prompt length: TRL 1.x has no prompt limit; every prompt of the task is far below data.max_prompt_tokens",
    "initialisation noise: TRL seeds torch with its own `seed` argument; ours seeds through train.py's --seed",
    "whole-run time: ours is a fresh train.py process (imports, model load, a small held-out evaluation before and "
    "after, the final checkpoint), TRL's runs in this process after its imports: compare the training loops",
]


def our_overrides(args) -> list[str]:
    """train.py overrides of our GRPO side (everything else is the arithmetic preset)."""
    return ["--rl.algo", "grpo", "--rl.dynamic_sampling", "false", "--meta_prover.enabled", "false", "--rl.eps",
            "1e-4", "--seed", str(args.seed),
            "--optim.steps", str(args.steps), "--eval.every", "0", "--eval.held_out", "8", "--eval.samples", "1",
            "--checkpoint.every", "0", "--logging.progress_bar", "false", "--logging.plots", "true"]


def train_ours(args, out_dir: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(PRESET), *our_overrides(args),
           "--logging.out_dir", str(out_dir)]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    total = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in recs if r.get("kind", "train") == "train"]
    ckpts = sorted((out_dir / "checkpoints").glob("step_*"))
    return {"model": str(ckpts[-1]), "total_seconds": total,
            "train_seconds": sum(r.get("time/step", 0.0) for r in train),
            "reward": [r.get("reward") for r in train],
            "zero_variance_groups": [r.get("zero_variance_groups") for r in train]}


def step_order(cfg, steps: int):
    """The training examples in the order our trainer takes them (its seeded permutation), B per step."""
    from mrt.data import load_prompts
    from transformers import AutoTokenizer

    from mrt.hub import resolve_model_path
    from mrt.trainer import Trainer
    path = resolve_model_path(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_prompts(cfg.data, tokenizer, seed=cfg.seed)
    # Trainer.step_prompts reads only cfg, train_data and _perm: run it on a stand-in, not on a whole Trainer.
    ns = types.SimpleNamespace(cfg=cfg, train_data=data)
    ns._perm = lambda epoch: Trainer._perm(ns, epoch)
    return [data[i] for s in range(steps) for i in Trainer.step_prompts(ns, s)], tokenizer, path


def trl_config(cfg, args, out_dir: Path):
    from trl import GRPOConfig
    r, o, rl = cfg.rollout, cfg.optim, cfg.rl
    return GRPOConfig(
        output_dir=str(out_dir), max_steps=args.steps, per_device_train_batch_size=o.prompts_per_step * r.group_size,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, num_generations=r.group_size,
        max_completion_length=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=0,
        learning_rate=o.lr, max_grad_norm=o.grad_clip, beta=rl.kl_coef, epsilon=rl.clip_low, epsilon_high=rl.clip_high,
        loss_type="dapo", scale_rewards="group" if rl.scale_by_std else "none", mask_truncated_completions=False,
        shuffle_dataset=False, seed=args.seed, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, dataloader_num_workers=0, disable_tqdm=True, log_completions=False)


def train_trl(cfg, args, out_dir: Path) -> dict:
    """TRL's GRPOTrainer on our prompts in our order, with our optimizer and schedule; its saved model folder."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from mrt.rewards import get_reward
    from mrt.update import make_optimizer, make_scheduler

    t0 = time.perf_counter()
    examples, tokenizer, path = step_order(cfg, args.steps)
    same_ids = all(tokenizer(e.prompt_text)["input_ids"] == list(e.prompt_ids) for e in examples)
    verify = get_reward(cfg.reward)

    def task_reward(completions, answer, **_):   # the task's verifier, the same function our trainer calls
        return [float(verify(c, a)) for c, a in zip(completions, answer)]

    ds = Dataset.from_dict({"prompt": [e.prompt_text for e in examples], "answer": [e.answer for e in examples]})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    opt = make_optimizer(model, cfg.optim)
    trainer = GRPOTrainer(model=model, reward_funcs=task_reward, args=trl_config(cfg, args, out_dir),
                          train_dataset=ds, processing_class=tokenizer,
                          optimizers=(opt, make_scheduler(opt, cfg.optim, args.steps)))
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()
    trainer.save_model(str(out_dir / "final"))
    tokenizer.save_pretrained(str(out_dir / "final"))
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"model": str(out_dir / "final"), "train_seconds": t2 - t1, "total_seconds": time.perf_counter() - t0,
            "setup_seconds": t1 - t0, "prompt_ids_equal_ours": same_ids,
            "reward": [h["reward"] for h in logs], "zero_variance_groups": [h.get("frac_reward_zero_std") for h in logs],
            "lr": [h.get("learning_rate") for h in logs]}


def evaluate(cfg, args, models: dict[str, str], out_dir: Path) -> dict[str, dict]:
    """pass@1 (sampled, at the training length and temperature) of each model on the same held-out problems."""
    from mrt.eval import EvalConfig, run
    L = cfg.rollout.max_new_tokens
    ecfg = EvalConfig(models=[f"{k}={v}" for k, v in models.items()], data=[f"arithmetic:{args.problems}"],
                      out=str(out_dir), budgets=[L], curve_every=L, samples=args.samples,
                      temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, seed=args.seed, answer_tokens=8,
                      progress=False)
    return {r["model"]: r for r in run(ecfg)}


def lr_matched(cfg, steps: int, logged: list) -> bool:
    """Whether the lr TRL used at each step (it logs the lr of the step it just took) is our schedule's."""
    from mrt.update import lr_lambda
    f = lr_lambda(cfg.optim, steps)
    want = [cfg.optim.lr * f(s) for s in range(steps)]
    return len(logged) == steps and all(abs(a - b) <= 1e-12 + 1e-6 * b for a, b in zip(logged, want))


def fifths(xs: list) -> tuple[float, float]:
    """Mean of the first and of the last fifth of a per-step series (at least one step each)."""
    xs = [x for x in xs if isinstance(x, (int, float))]
    if not xs:
        return float("nan"), float("nan")
    k = max(1, len(xs) // 5)
    return sum(xs[:k]) / k, sum(xs[-k:]) / k


def report(rows: list[dict], samples: int, base: float) -> str:
    head = ["trainer", "held-out pass@1", "gain over base", "gain per 1k samples", "train reward 1st -> last fifth",
            "zero-variance groups", "train loop s", "whole run s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        a, b = fifths(r["reward"])
        z = [x for x in r["zero_variance_groups"] if isinstance(x, (int, float))]
        gain = r["pass@1"] - base
        lines.append(f"| {r['name']} | {100 * r['pass@1']:.1f} | {100 * gain:+.1f} | {100 * gain * 1000 / samples:+.2f}"
                     f" | {a:.3f} -> {b:.3f} | {sum(z) / len(z) if z else float('nan'):.2f} | "
                     f"{r['train_seconds']:.0f} | {r['total_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_seed(args, runs: Path, trl_version: str | None) -> tuple[list[dict], dict, list[str]]:
    """Train both sides with args.seed and evaluate them: (rows of the two trainers, eval results, unmatched)."""
    cfg = load_config(str(PRESET), our_overrides(args))        # the settings both sides use
    ours = train_ours(args, runs / "ours")
    theirs = train_trl(cfg, args, runs / "trl") if trl_version else None
    models = {"base": str(ROOT / "mrt" / "assets" / "tiny_arithmetic_model"), "ours": ours["model"]}
    if theirs:
        models["trl"] = theirs["model"]
    results = evaluate(cfg, args, models, runs / "eval")
    rows = [{"name": "ours (mrt GRPO)", "seed": args.seed, **ours, "pass@1": results["ours"]["pass@1"]},
            {"name": f"TRL {trl_version} GRPOTrainer", "seed": args.seed, **theirs,
             "pass@1": results["trl"]["pass@1"]} if theirs
            else {"name": "TRL GRPOTrainer", "seed": args.seed, "skipped": "TRL not installed"}]
    unmatched = []
    if theirs and not theirs["prompt_ids_equal_ours"]:
        unmatched.append(f"seed {args.seed}: prompt token ids: TRL's tokenisation of the prompt texts differs from ours")
    if theirs and not lr_matched(cfg, args.steps, theirs["lr"]):
        unmatched.append(f"seed {args.seed}: learning rate: TRL's logged per-step lr {theirs['lr'][:3]}... is not "
                         "our schedule's")
    return rows, results, unmatched


def over_seeds(per_seed: list[dict]) -> list[dict]:
    """Per trainer, mean +- 95% t-interval over seeds of pass@1, its gain over the base (same seed's draws) and the
    training loop's seconds; and ours minus TRL paired by seed."""
    from mrt.eval.stats import mean_interval
    out = []
    names = dict.fromkeys(r["name"] for s in per_seed for r in s["rows"] if not r.get("skipped"))
    for name in names:
        rs = [(r, s["base"]) for s in per_seed for r in s["rows"] if r["name"] == name]
        row = {"name": name, "seeds": len(rs)}
        for key, vals in (("pass@1", [r["pass@1"] for r, _ in rs]), ("gain", [r["pass@1"] - b for r, b in rs]),
                          ("train_seconds", [r["train_seconds"] for r, _ in rs])):
            row[f"{key}_mean"], row[f"{key}_ci95"] = mean_interval(vals)
        out.append(row)
    if len(out) == 2:
        diffs = [s["rows"][0]["pass@1"] - s["rows"][1]["pass@1"] for s in per_seed]
        ratios = [s["rows"][0]["train_seconds"] / max(s["rows"][1]["train_seconds"], 1e-9) for s in per_seed]
        d, dh = mean_interval(diffs)
        t, th = mean_interval(ratios)
        out.append({"name": "ours - TRL (paired by seed)", "seeds": len(diffs), "pass@1_mean": d, "pass@1_ci95": dh,
                    "time_ratio_mean": t, "time_ratio_ci95": th})
    return out


def _pm(mean: float, half: float, scale: float = 100.0, fmt: str = ".1f") -> str:
    return f"{scale * mean:{fmt}}" + ("" if half != half else f" ± {scale * half:{fmt}}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, help="training steps of both (default: the embedded default's optim.steps)")
    ap.add_argument("--problems", type=int, default=512, help="held-out problems")
    ap.add_argument("--samples", type=int, default=4, help="samples per held-out problem")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed + 1, ...)")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "learning_vs_trl"))
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "learning_vs_trl.json"))
    args = ap.parse_args()
    if args.steps is None:
        args.steps = load_config(str(PRESET), []).optim.steps
    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
        print(TRL_MISSING, flush=True)
    cfg = load_config(str(PRESET), our_overrides(args))
    n_samples = args.steps * cfg.optim.prompts_per_step * cfg.rollout.group_size
    per_seed, unmatched = [], list(UNMATCHED)
    for s in range(args.seed, args.seed + args.seeds):
        a = argparse.Namespace(**{**vars(args), "seed": s})
        rows, results, extra = run_seed(a, Path(args.runs_dir) / f"seed_{s}", trl_version)
        per_seed.append({"seed": s, "base": results["base"]["pass@1"], "rows": rows, "eval": results})
        unmatched += extra

    print(f"\n{args.steps} steps x {cfg.optim.prompts_per_step} prompts x G={cfg.rollout.group_size} = {n_samples} "
          f"samples each; held-out: {args.problems} problems x {args.samples} samples at T {cfg.rollout.temperature}; "
          f"torch threads {torch.get_num_threads()}")
    for s in per_seed:
        print(f"seed {s['seed']}: base pass@1 {100 * s['base']:.1f}")
        print(report(s["rows"], n_samples, s["base"]))
    summary = over_seeds(per_seed)
    if len(per_seed) > 1:
        print(f"over {len(per_seed)} seeds (mean ± 95% t-interval):")
        for r in summary:
            if "gain_mean" in r:
                print(f"  {r['name']}: pass@1 {_pm(r['pass@1_mean'], r['pass@1_ci95'])}, gain over base "
                      f"{_pm(r['gain_mean'], r['gain_ci95'])}, train loop "
                      f"{_pm(r['train_seconds_mean'], r['train_seconds_ci95'], 1.0, '.0f')} s")
    paired = [r for r in summary if "time_ratio_mean" in r]
    if paired:
        p = paired[0]
        print(f"ours - TRL held-out pass@1: {_pm(p['pass@1_mean'], p['pass@1_ci95'])} points; our training loop takes "
              f"{_pm(p['time_ratio_mean'], p['time_ratio_ci95'], 1.0, '.2f')}x TRL's time")
    print("not matched:\n" + "\n".join(f"  - {u}" for u in unmatched))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "samples_per_run": n_samples, "problems": args.problems,
                               "eval_samples": args.samples, "seeds": [s["seed"] for s in per_seed],
                               "threads": torch.get_num_threads(), "summary": summary, "unmatched": unmatched,
                               "our_overrides": our_overrides(args), "trl_version": trl_version,
                               "settings": cfg.to_dict(), "per_seed": per_seed}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
