"""MRT against GRPO on the embedded default, over seeds: the paper's comparison at toy scale.

For each seed, train the tiny SFT model (mrt/assets/tiny_model) with GRPO and with MRT in its three advantage modes
(dense, sum, termination_baseline), every run with the same sample budget (steps x prompts x G, read back from each
run's resolved config and checked equal), then evaluate the base model and the four runs with `mrt.eval`'s `run` on
held-out problems (>= 512 by default) at the training temperature. Prints, per model, the mean over seeds +- the
half-width of the 95% t-interval (t_{0.975, seeds-1} s / sqrt(seeds)) of pass@1, maj@k, accuracy at 3 token budgets,
normalised regret at those budgets and mean tokens; then MRT minus GRPO paired by seed (the claim to test: MRT has
lower normalised regret and higher accuracy at the small budgets, and no lower pass@1). One plot: accuracy and
normalised regret against the budget, with bands.

    python benchmarks/mrt_vs_grpo.py --seeds 3                       # the study (about 3 h on 2 CPU cores)
    python benchmarks/mrt_vs_grpo.py --seeds 1 --steps 3 --problems 32 --samples 2   # a smoke run
    python benchmarks/mrt_vs_grpo.py --seeds 3 --skip-train          # re-evaluate the checkpoints of an earlier run

Training goes through train.py's own command line (`--rl.algo --rl.advantage_mode --seed --optim.steps
--logging.out_dir`, plus any `--train-arg`); the model evaluated is each run's last checkpoint. Writes
bench_results/mrt_vs_grpo.json (the summary rows, every per-seed number, the sample budgets, the settings) and
bench_results/mrt_vs_grpo/ (accuracy_vs_budget.png, and each seed's results.json, results.md and plots).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mrt.eval import EvalConfig, run  # noqa: E402
from mrt.eval.stats import mean_interval  # noqa: E402

SIZES = {
    # RL steps, held-out problems, samples per problem, budgets (output tokens; the last one is the training
    # budget, rollout.max_new_tokens), extrapolation rounds and their tokens (0 rounds: off)
    "cpu": dict(steps=200, problems=512, samples=4, budgets=[32, 64, 96], rounds=0, round_tokens=32),
    "gpu": dict(steps=200, problems=1024, samples=16, budgets=[32, 64, 96], rounds=2, round_tokens=48),
}
RUNS = {  # name -> train.py overrides; everything else is the embedded default
    "grpo": ["--rl.algo", "grpo"],
    "mrt-dense": ["--rl.algo", "mrt", "--rl.advantage_mode", "dense"],
    "mrt-sum": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum"],
    "mrt-termination_baseline": ["--rl.algo", "mrt", "--rl.advantage_mode", "termination_baseline"],
    # Opt-in (--runs): sum mode with J_-1 estimated from bare-prompt branches instead of 0, the check of why sum
    # mode loses with J_-1 = 0 (its summed progress then telescopes to J at the last boundary, a bonus >= 0).
    "mrt-sum-prompt_branches": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum",
                                "--meta_prover.prompt_branches", "true"],
    # Opt-in: sum mode with the bonus scaled down, the check of whether a smaller alpha stops the bonus for reaching a
    # boundary (alpha * J_{k-1}) from outweighing the outcome reward.
    "mrt-sum-alpha0.3": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum", "--rl.alpha", "0.3"],
}
DEFAULT_RUNS = ["grpo", "mrt-dense", "mrt-sum", "mrt-termination_baseline"]


def last_checkpoint(run_dir: Path) -> Path:
    """The highest step_* folder under run_dir/checkpoints (else the newest folder with config.json + weights)."""
    steps = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if (p / "config.json").exists())
    if steps:
        return steps[-1]
    found = [p.parent for p in run_dir.rglob("config.json") if any(p.parent.glob("*.safetensors"))]
    if not found:
        raise SystemExit(f"no checkpoint (config.json + *.safetensors) under {run_dir}")
    return max(found, key=lambda d: d.stat().st_mtime)


def train(overrides: list[str], steps: int, seed: int, out_dir: Path, extra: list[str]) -> float:
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, "--seed", str(seed), "--optim.steps", str(steps),
           "--logging.out_dir", str(out_dir), "--logging.progress_bar", "false", *extra]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def sample_budget(run_dir: Path) -> dict:
    """What a run generated, from its resolved config and metrics: traces (each step's logged `prompts_generated`
    x G, which counts dynamic sampling's extra prompts; B x G where it is not logged), and tokens (traces +
    meta-prover branches)."""
    import yaml
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    train_recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_recs = [r for r in train_recs if r.get("kind", "train") == "train"]
    B, G = cfg["optim"]["prompts_per_step"], cfg["rollout"]["group_size"]
    return {"steps": len(train_recs), "prompts_per_step": cfg["optim"]["prompts_per_step"],
            "group_size": cfg["rollout"]["group_size"],
            "samples": int(sum(r.get("prompts_generated", B) * G for r in train_recs)),
            "generated_tokens": int(sum(r.get("generated_tokens", 0) for r in train_recs)),
            "train_loop_seconds": float(sum(r.get("time/step", 0.0) for r in train_recs))}


def metrics_of(result: dict) -> dict[str, float]:
    """The compared numbers of one model on one seed (accuracy and regret as fractions)."""
    out = {"pass@1": result["pass@1"], f"maj@{len(result['maj@k'])}": result["maj@k"][-1]}
    out.update({f"acc@{b}": a for b, a in zip(result["budgets"], result["accuracy_at_budget"])})
    out.update({f"regret@{b}": r for b, r in zip(result["budgets"], result["normalised_regret_at_budget"])})
    out["tokens"] = result["mean_tokens"]
    return out


def summarize(per_seed: dict[int, list[dict]]) -> list[dict]:
    """One row per model: for each metric its mean over seeds, the 95% half-width and the per-seed values."""
    models = list(dict.fromkeys(r["model"] for rows in per_seed.values() for r in rows))
    rows = []
    for m in models:
        vals = [metrics_of(r) for rows_ in per_seed.values() for r in rows_ if r["model"] == m]
        row = {"model": m, "seeds": len(vals)}
        for k in vals[0]:
            mean, half = mean_interval([v[k] for v in vals])
            row[f"{k}_mean"], row[f"{k}_ci95"], row[f"{k}_values"] = mean, half, [v[k] for v in vals]
        rows.append(row)
    return rows


def paired_vs(per_seed: dict[int, list[dict]], ref: str) -> list[dict]:
    """Each other model minus `ref`, seed by seed (same seed: same prompts order and eval draws), mean +- 95%."""
    out = []
    by = {s: {r["model"]: metrics_of(r) for r in rows} for s, rows in per_seed.items()}
    for m in dict.fromkeys(r["model"] for rows in per_seed.values() for r in rows):
        if m == ref or any(m not in v or ref not in v for v in by.values()):
            continue
        row = {"model": f"{m} - {ref}"}
        for k in next(iter(by.values()))[ref]:
            mean, half = mean_interval([v[m][k] - v[ref][k] for v in by.values()])
            row[f"{k}_mean"], row[f"{k}_ci95"] = mean, half
        out.append(row)
    return out


def verdict(mean: float, half: float, *, lower_is_better: bool) -> str:
    """"better" / "worse" when the 95% interval of a paired difference excludes 0, else "no clear difference"."""
    if half != half or abs(mean) <= half:
        return "no clear difference"
    return "better" if (mean < 0) == lower_is_better else "worse"


def claim_lines(paired: list[dict], budgets: list[int]) -> list[str]:
    """The paper's claim, per MRT mode against GRPO: lower normalised regret, higher accuracy at the small budgets,
    pass@1 no lower."""
    lines = []
    for r in paired:
        if not r["model"].startswith("mrt"):
            continue
        parts = [f"regret@{b} {verdict(r[f'regret@{b}_mean'], r[f'regret@{b}_ci95'], lower_is_better=True)}"
                 for b in budgets]
        parts += [f"acc@{b} {verdict(r[f'acc@{b}_mean'], r[f'acc@{b}_ci95'], lower_is_better=False)}"
                  for b in budgets[:-1]]
        parts.append(f"pass@1 {verdict(r['pass@1_mean'], r['pass@1_ci95'], lower_is_better=False)}")
        lines.append(f"  {r['model'].split(' ')[0]} vs grpo: " + ", ".join(parts))
    return lines


def _cell(row: dict, k: str, scale: float) -> str:
    mean, half = row[f"{k}_mean"], row[f"{k}_ci95"]
    return f"{scale * mean:.1f}" + ("" if half != half else f" ± {scale * half:.1f}")


def table(rows: list[dict]) -> str:
    """Markdown: accuracy in percent, regret in percent of the oracle's area (0 best), tokens as counts."""
    keys = [k[:-5] for k in rows[0] if k.endswith("_mean")]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(_cell(r, k, 1.0 if k == "tokens" else 100.0) for k in keys)
                     + " |")
    return "\n".join(lines) + "\n"


def plot_budget(rows: list[dict], budgets: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (prefix, title) in zip(axes, (("acc", "accuracy at budget (budget forcing)"),
                                          ("regret", "normalised regret at budget"))):
        for i, r in enumerate(rows):
            mean = [r[f"{prefix}@{b}_mean"] for b in budgets]
            half = [r[f"{prefix}@{b}_ci95"] for b in budgets]
            ax.plot(budgets, mean, "o-", color=f"C{i}", markersize=4, label=r["model"])
            if all(h == h for h in half):   # no band from a single seed; both are fractions: clipped to [0, 1]
                ax.fill_between(budgets, [max(m - h, 0.0) for m, h in zip(mean, half)],
                                [min(m + h, 1.0) for m, h in zip(mean, half)], color=f"C{i}", alpha=0.15, lw=0)
        ax.set_title(f"{title}, mean over {rows[0]['seeds']} seed(s), 95% band", fontsize=10)
        ax.set_xlabel("thinking budget (output tokens)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (seed, seed + 1, ...)")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--steps", type=int, help="RL steps (default: by size)")
    ap.add_argument("--problems", type=int, help="held-out problems (default: by size)")
    ap.add_argument("--samples", type=int, help="samples per held-out problem (default: by size)")
    ap.add_argument("--budgets", help="comma-separated output-token budgets (default: by size)")
    ap.add_argument("--rounds", type=int, help="extrapolation rounds, 0: off (default: by size)")
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                    help=f"comma-separated subset of {','.join(RUNS)} (default: {','.join(DEFAULT_RUNS)})")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "mrt_vs_grpo"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate the checkpoints already in --runs-dir")
    ap.add_argument("--base", default=str(ROOT / "mrt" / "assets" / "tiny_model"), help="the base (SFT) model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--temperature", type=float, default=0.7, help="eval sampling temperature (the training one)")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "mrt_vs_grpo.json"))
    ap.add_argument("--train-arg", action="append", default=[], help="extra train.py override (repeatable)")
    args = ap.parse_args()
    if not args.out.endswith(".json"):
        ap.error(f"--out names the JSON file to write (plots go beside it), got {args.out!r}")
    size = SIZES[args.size]
    for k in ("steps", "problems", "samples", "rounds"):
        if getattr(args, k) is None:
            setattr(args, k, size[k])
    args.budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else size["budgets"]
    args.round_tokens = size["round_tokens"]
    args.runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        ap.error(f"unknown runs {unknown}; known: {sorted(RUNS)}")
    return args


def train_all(args, seeds: list[int]) -> dict:
    """Train every run of every seed (unless --skip-train); returns {run: {seed: sample budget and seconds}}."""
    runs_dir, budget = Path(args.runs_dir), {}
    for s in seeds:
        for name in args.runs:
            out = runs_dir / f"seed_{s}" / name
            secs = None if args.skip_train else train(RUNS[name], args.steps, s, out, args.train_arg)
            budget.setdefault(name, {})[s] = {**sample_budget(out), "process_seconds": secs}
    samples = {b["samples"] for per in budget.values() for b in per.values()}
    if len(samples) > 1:
        print(f"WARNING: the runs generated different numbers of samples: {sorted(samples)}", flush=True)
    return budget


def evaluate_seed(args, seed: int, out_dir: Path) -> list[dict]:
    runs_dir = Path(args.runs_dir) / f"seed_{seed}"
    models = [f"base={args.base}"] + [f"{n}={last_checkpoint(runs_dir / n)}" for n in args.runs]
    cfg = EvalConfig(models=models, data=[f"arithmetic:{args.problems}"], out=str(out_dir / f"seed_{seed}"),
                     budgets=args.budgets, samples=args.samples, temperature=args.temperature, seed=seed,
                     answer_tokens=8, curve_every=8, extrapolation_rounds=args.rounds,
                     round_tokens=args.round_tokens, eval_every=1, markers=["Wait ,"],
                     think_end=["The answer is"], device=args.device, progress=False)
    return run(cfg)


def main() -> None:
    args = parse_args()
    seeds = list(range(args.seed, args.seed + args.seeds))
    out = Path(args.out)
    t0 = time.perf_counter()
    budget = train_all(args, seeds)
    t_train = time.perf_counter() - t0
    per_seed = {s: evaluate_seed(args, s, out.with_suffix("")) for s in seeds}
    t_eval = time.perf_counter() - t0 - t_train

    rows = summarize(per_seed)
    paired = paired_vs(per_seed, "grpo") if "grpo" in args.runs else []
    print(f"\nheld-out: {args.problems} problems x {args.samples} samples at T {args.temperature}; {len(seeds)} "
          f"seed(s); mean ± 95% t-interval over seeds; accuracy and regret in %")
    print(table(rows))
    if paired:
        print("paired by seed, each model minus GRPO (for regret, negative means lower regret than GRPO's):")
        print(table(paired))
        if len(seeds) >= 3:   # two seeds that happen to agree give a zero-width interval: no verdict from them
            print("the paper's claim (better / worse: the 95% interval of the paired difference excludes 0):")
            print("\n".join(claim_lines(paired, args.budgets)))
        else:
            print("the paper's claim: no verdict from fewer than 3 seeds")
    print("sample budget per run (traces generated over training):")
    for name, per in budget.items():
        print(f"  {name}: " + ", ".join(f"seed {s}: {b['samples']} samples, {b['generated_tokens']} tokens, "
                                        f"{b['train_loop_seconds']:.0f} s" for s, b in per.items()))
    plot = out.with_suffix("") / "accuracy_vs_budget.png"
    plot_budget(rows, args.budgets, plot)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items()}
    out.write_text(json.dumps({"size": args.size, "seeds": seeds, "steps": args.steps, "problems": args.problems,
                               "samples": args.samples, "train_seconds": t_train, "eval_seconds": t_eval,
                               "threads": os.cpu_count(), "summary": rows, "paired_vs_grpo": paired,
                               "sample_budget": budget, "settings": settings,
                               "results": {str(s): r for s, r in per_seed.items()}}, indent=2, default=str))
    print(f"wrote {out}, {plot} and {out.with_suffix('')}/seed_*/ (results.json, results.md, plots)")


if __name__ == "__main__":
    main()
