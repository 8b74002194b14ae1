"""MRT against GRPO on a synthetic task, over seeds: the paper's comparison at toy scale.

`--task` picks the task (`arithmetic`, the default, or `countdown`; TASKS): its train.py preset (`--config`), whose
model is the base (SFT) model and whose `rollout.max_new_tokens` is the training budget T, the eval's data spec,
markers and answer tokens. For each seed, train the base model with GRPO and with MRT (dense, sum at alpha 1 and
0.3, termination_baseline), every run with the same sample budget (steps x prompts x G, read back from each run's
resolved config and checked equal), then evaluate the base model and the runs with `mrt.eval` on held-out problems
(>= 512 by default) at the training temperature, with budget forcing at >= 4 budgets (T/2, T, 2T, 4T: two past
training, the extrapolation claim; budgets that do not fit the model's context are replaced by the largest that
does, and said so) and the meta-prover forked at every episode boundary (the preset's markers).

Prints, per model, the mean over seeds +- the half-width of the 95% t-interval (t_{0.975, seeds-1} s / sqrt(seeds)),
and each model minus GRPO paired by seed, of:
- pass@1, maj@k (what the vote is on is printed: the extracted value where a problem has one right answer; for
  countdown, where many expressions are right, the expression as written) and pass@k, of the traces' own answers
  within the largest budget (the traces are generated once, up to it);
- accuracy and normalised regret at each budget; mean tokens;
- token efficiency: the smallest budget at which each model reaches GRPO's accuracy at T (read linearly off its
  accuracy-vs-budget curve on the eval's grid of forced points) and GRPO's budget over it (the paper: 1.2-1.6x);
- gain ratio (MRT - base) / (GRPO - base) on pass@1 and on accuracy at T (the paper: about 2);
- episodes a trace, the accuracy when the answer is forced after episode j (the linearized view: does each episode
  add?), and the distribution of per-episode progress E_j - E_{j-1} pooled over seeds (the paper's Fig. 16).
One plot, accuracy_vs_tokens.png: accuracy against the budget with 95% bands, the training budget marked and the
budgets past it shaded (and accuracy_vs_budget.png: accuracy and regret at the budgets, as before).

    python benchmarks/mrt_vs_grpo.py --seeds 3                                   # arithmetic (hours on 2 CPU cores)
    python benchmarks/mrt_vs_grpo.py --task countdown --seeds 3 --jobs 2         # two train.py at once
    python benchmarks/mrt_vs_grpo.py --seeds 1 --steps 2 --problems 8 --samples 2   # a smoke run (about a minute)
    python benchmarks/mrt_vs_grpo.py --seeds 3 --skip-train                      # re-evaluate an earlier run

Training goes through train.py's own command line (`--config <preset> --rl.algo --rl.advantage_mode --seed
--optim.steps --logging.out_dir`, plus any `--train-arg`); the model evaluated is each run's last checkpoint.
`--jobs N` runs N train.py (and N evaluations) at once, each with OMP_NUM_THREADS=1 and its output in a log file
beside its run. Writes bench_results/mrt_vs_grpo.json (bench_results/mrt_vs_grpo_<task>.json for another task: the
summary rows, every per-seed number, the sample budgets, the settings, and the keys token_efficiency, gain_ratio,
episodes, progress_distribution) and, beside it, a folder with the plots and each seed's results.json, results.md
and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mrt.eval import EvalConfig, run  # noqa: E402
from mrt.eval.comparison import accuracy_at, budget_to_reach, gain_ratio  # noqa: E402
from mrt.eval.episode_forcing import episode_progress, progress_summary  # noqa: E402
from mrt.eval.stats import mean_interval  # noqa: E402


@dataclass(frozen=True)
class Task:
    """What the comparison needs of a task; the model, the training budget and the episode markers come from its
    preset (the first of `presets` that exists and trains this task)."""
    name: str
    presets: tuple[str, ...]           # train.py presets, relative to the repository
    answer_tokens: int                 # the eval's forced-answer length
    curve_every: int                   # the eval's grid of forced points (output tokens)
    vote: str                          # what maj@k votes on
    markers: tuple[str, ...] = ("Wait ,",)          # extrapolation: appended when the model stops thinking
    think_end: tuple[str, ...] = ("The answer is",)


TASKS = {
    "arithmetic": Task("arithmetic", ("configs/tiny_arithmetic_mrt.yaml",), answer_tokens=8,
                       curve_every=8, vote="the extracted final value (one right answer a problem)"),
    "countdown": Task("countdown", ("configs/tiny_mrt.yaml",), answer_tokens=16,
                      curve_every=10, vote="the expression as written (many expressions are right, so two right "
                      "ones split the vote: read pass@k beside it)"),
}
SIZES = {
    # RL steps, held-out problems, samples per problem, extrapolation rounds and their tokens (0 rounds: off)
    "cpu": dict(steps=200, problems=512, samples=4, rounds=0, round_tokens=32),
    "gpu": dict(steps=200, problems=1024, samples=16, rounds=2, round_tokens=48),
}
RUNS = {  # name -> train.py overrides on top of the task's preset
    "grpo": ["--rl.algo", "grpo"],
    "mrt-dense": ["--rl.algo", "mrt", "--rl.advantage_mode", "dense"],
    "mrt-sum": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum"],
    # Sum mode with the bonus scaled down: whether a smaller alpha stops the bonus for reaching a boundary
    # (alpha * J_{k-1}) from outweighing the outcome reward.
    "mrt-sum-alpha0.3": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum", "--rl.alpha", "0.3"],
    "mrt-termination_baseline": ["--rl.algo", "mrt", "--rl.advantage_mode", "termination_baseline"],
    # Opt-in (--runs): sum mode with J_-1 estimated from bare-prompt branches instead of 0, the check of why sum
    # mode loses with J_-1 = 0 (its summed progress then telescopes to J at the last boundary, a bonus >= 0).
    "mrt-sum-prompt_branches": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum",
                                "--meta_prover.prompt_branches", "true"],
}
DEFAULT_RUNS = ["grpo", "mrt-dense", "mrt-sum", "mrt-sum-alpha0.3", "mrt-termination_baseline"]
PRINT_EPISODES = 8   # episode indices printed in the tables (all of them go to the JSON)


# ---------------------------------------------------------------------------------------------- the task's preset

def task_preset(task: Task) -> tuple[Path, dict]:
    """(path, settings) of the first preset of the task that exists and trains it (its reward names the task)."""
    import yaml
    for rel in task.presets:
        path = ROOT / rel
        if path.exists():
            cfg = yaml.safe_load(path.read_text()) or {}
            if task.name in (cfg.get("reward"), (cfg.get("data") or {}).get("path")):
                return path, cfg
    raise SystemExit(f"error: no train.py preset for task {task.name!r} yet (looked for {', '.join(task.presets)} "
                     f"with reward: {task.name})")


def resolve_base(cfg: dict) -> str:
    from mrt.hub import resolve_model_path
    return resolve_model_path(cfg["model"]["path"], key="model.path")


def max_fitting_budget(base: str, data: str, task: Task, termination_text: str) -> int:
    """The largest budget the eval's context guard lets through for the base model and the held-out prompts:
    max_position_embeddings - longest prompt - termination text - answer tokens (mrt.eval.evaluate.check_context)."""
    from mrt.eval.evaluate import format_prompts
    from mrt.eval.problems import load_dataset
    from mrt.eval.run import model_context
    from mrt.hub import load_checked_tokenizer
    context = model_context(base)
    vocab = json.loads((Path(base) / "config.json").read_text()).get("vocab_size")
    tok = load_checked_tokenizer(base, vocab, key="--base")
    ds = load_dataset(data)
    longest = max(len(p) for p in format_prompts(tok, ds.problems, EvalConfig(budgets=[1])))
    return min(context - 1, context - longest - len(tok.encode(termination_text, add_special_tokens=False))
               - task.answer_tokens)


def task_budgets(train_budget: int, fit: int) -> tuple[list[int], list[str]]:
    """[T/2, T, 2T, 4T] within the context (those past it replaced once by the largest budget that fits), and notes."""
    want = [max(1, train_budget // 2), train_budget, 2 * train_budget, 4 * train_budget]
    budgets, notes = [b for b in want if b <= fit], []
    dropped = [b for b in want if b > fit]
    if dropped:
        notes.append(f"budgets {dropped} do not fit the model's context (the largest that does: {fit} tokens)")
        if fit > train_budget and fit not in budgets:
            budgets.append(fit)
    past = [b for b in budgets if b > train_budget]
    if len(past) < 2:
        notes.append(f"only {len(past)} budget(s) past the training budget {train_budget}: {past}")
    return sorted(budgets), notes


# --------------------------------------------------------------------------------------------------------- training

def last_checkpoint(run_dir: Path) -> Path:
    """The highest step_* folder under run_dir/checkpoints (else the newest folder with config.json + weights)."""
    steps = sorted((p for p in (run_dir / "checkpoints").glob("step_*") if (p / "config.json").exists()),
                   key=lambda p: int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1)
    if steps:
        return steps[-1]
    found = [p.parent for p in run_dir.rglob("config.json") if any(p.parent.glob("*.safetensors"))]
    if not found:
        raise SystemExit(f"no checkpoint (config.json + *.safetensors) under {run_dir}")
    return max(found, key=lambda d: d.stat().st_mtime)


def train_command(preset: Path, overrides: list[str], steps: int, seed: int, out_dir: Path,
                  extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--config", str(preset), *overrides, "--seed", str(seed),
            "--optim.steps", str(steps), "--logging.out_dir", str(out_dir), "--logging.progress_bar", "false",
            *extra]


def train(cmd: list[str], log: Path | None = None) -> float:
    """Run one train.py; with a log file its output goes there (concurrent runs) and OMP_NUM_THREADS is 1."""
    print("+", " ".join(cmd) + (f"  > {log}" if log else ""), flush=True)
    t0 = time.perf_counter()
    if log is None:
        subprocess.run(cmd, check=True, cwd=ROOT)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise SystemExit(f"train.py failed (exit {proc.returncode}); the end of {log}:\n{tail}")
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


def train_all(args, seeds: list[int]) -> dict:
    """Train every run of every seed (unless --skip-train), --jobs at once; returns {run: {seed: sample budget and
    seconds}}."""
    runs_dir = Path(args.runs_dir)
    jobs = [(s, name) for s in seeds for name in args.runs]
    secs: dict = {}
    if not args.skip_train:
        def one(job):
            s, name = job
            out = runs_dir / f"seed_{s}" / name
            # A --base given on the command line is what every run trains from (else the preset's model.path).
            model = ["--model.path", args.base] if args.base_given else []
            cmd = train_command(args.preset, RUNS[name] + model, args.steps, s, out, args.train_arg)
            return job, train(cmd, runs_dir / f"seed_{s}" / f"{name}.log" if args.jobs > 1 else None)
        if args.jobs > 1:
            with ThreadPoolExecutor(args.jobs) as pool:
                secs = dict(pool.map(one, jobs))
        else:
            secs = dict(one(j) for j in jobs)
    budget: dict = {}
    for s, name in jobs:
        budget.setdefault(name, {})[s] = {**sample_budget(runs_dir / f"seed_{s}" / name),
                                          "process_seconds": secs.get((s, name))}
    samples = {b["samples"] for per in budget.values() for b in per.values()}
    if len(samples) > 1:
        print(f"WARNING: the runs generated different numbers of samples: {sorted(samples)}", flush=True)
    return budget


# ------------------------------------------------------------------------------------------------------- evaluation

def eval_config(args, seed: int, models: list[str], out: Path) -> EvalConfig:
    return EvalConfig(models=models, data=[args.data], out=str(out), budgets=args.budgets, samples=args.samples,
                      temperature=args.temperature, seed=seed, answer_tokens=args.task.answer_tokens,
                      curve_every=args.curve_every, extrapolation_rounds=args.rounds, round_tokens=args.round_tokens,
                      eval_every=1, markers=list(args.task.markers), think_end=list(args.task.think_end),
                      episode_markers=list(args.episode_markers), episode_min_paragraphs=args.episode_min_paragraphs,
                      device=args.device, progress=False)


def evaluate_all(args, seeds: list[int], out_dir: Path) -> dict[int, list[dict]]:
    """Every model of every seed (--jobs at once, one model a process), then each seed's report and plots."""
    from mrt.eval.plots import plot_results
    from mrt.eval.report import write_report
    per_seed: dict[int, list[dict]] = {}
    if args.jobs <= 1:
        for s in seeds:
            models = [f"base={args.base}"] + [f"{n}={last_checkpoint(Path(args.runs_dir) / f'seed_{s}' / n)}"
                                              for n in args.runs]
            per_seed[s] = run(eval_config(args, s, models, out_dir / f"seed_{s}"))
        return per_seed
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    cfgs = {}
    for s in seeds:
        for n in ["base"] + args.runs:
            path = args.base if n == "base" else last_checkpoint(Path(args.runs_dir) / f"seed_{s}" / n)
            cfgs[s, n] = eval_config(args, s, [f"{n}={path}"], out_dir / f"seed_{s}" / "models" / n)
    os.environ["OMP_NUM_THREADS"] = "1"    # read by torch when each fresh (spawned) worker imports it
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        done = dict(zip(cfgs, pool.map(run, cfgs.values())))
    for s in seeds:
        per_seed[s] = [r for n in ["base"] + args.runs for r in done[s, n]]
        cfg = eval_config(args, s, [f"{r['model']}" for r in per_seed[s]], out_dir / f"seed_{s}")
        write_report(per_seed[s], cfg.out, cfg.to_dict())
        plot_results(per_seed[s], cfg.out)
    return per_seed


# ---------------------------------------------------------------------------------------------------------- metrics

def num_linearized(per_seed: dict[int, list[dict]]) -> int:
    """Episode indices shown: the most episodes of any trace of any model (past its last one a trace's value stays)."""
    return max((len(r["episodes"]["linearized_accuracy"]) for rows in per_seed.values() for r in rows
                if r.get("episodes")), default=0)


def metrics_of(result: dict, n_lin: int = 0) -> dict[str, float]:
    """The compared numbers of one model on one seed (accuracy and regret as fractions)."""
    k = len(result["maj@k"])
    out = {"pass@1": result["pass@1"], f"maj@{k}": result["maj@k"][-1]}
    if result.get("pass@k"):
        out[f"pass@{len(result['pass@k'])}"] = result["pass@k"][-1]
    out.update({f"acc@{b}": a for b, a in zip(result["budgets"], result["accuracy_at_budget"])})
    out.update({f"regret@{b}": r for b, r in zip(result["budgets"], result["normalised_regret_at_budget"])})
    out["tokens"] = result["mean_tokens"]
    e = result.get("episodes")
    if e:
        out["episodes"] = e["episodes_per_trace"]
        lin = e["linearized_accuracy"]
        out.update({f"after_ep{j}": lin[min(j, len(lin) - 1)] for j in range(n_lin)})
    return out


def accuracy_curve(result: dict) -> tuple[list[float], list[float]]:
    """(budgets, accuracy) of one result on the eval's grid of forced points (output tokens)."""
    return list(map(float, result["curve"]["output_tokens"])), list(map(float, result["curve"]["J"]))


def efficiency_of(per_seed: dict[int, list[dict]], train_budget: int, ref: str = "grpo") -> dict:
    """Per seed and model: the budget at which the model reaches `ref`'s accuracy at the training budget, and ref's
    budget over it; {model: {"target", "budget", "ratio"}: per-seed lists}."""
    out: dict = {}
    for s, rows in per_seed.items():
        curves = {r["model"]: accuracy_curve(r) for r in rows}
        if ref not in curves:
            return {}
        target = accuracy_at(*curves[ref], train_budget)
        ref_budget = budget_to_reach(*curves[ref], target)
        for m, c in curves.items():
            t = budget_to_reach(*c, target)
            d = out.setdefault(m, {"seeds": [], "target": [], "budget": [], "ratio": []})
            d["seeds"].append(s)
            d["target"].append(target)
            d["budget"].append(t)
            d["ratio"].append(ref_budget / t if t == t and t > 0 else float("nan"))
    return out


def gain_ratios(per_seed: dict[int, list[dict]], keys: list[str], ref: str = "grpo", base: str = "base") -> dict:
    """{model: {key: {"per_seed": [...], "of_means": (mean gain) / (mean ref gain)}}} for every model but ref/base."""
    by = {s: {r["model"]: metrics_of(r) for r in rows} for s, rows in per_seed.items()}
    if any(ref not in v or base not in v for v in by.values()):
        return {}
    out: dict = {}
    for m in dict.fromkeys(r["model"] for rows in per_seed.values() for r in rows):
        if m in (ref, base):
            continue
        out[m] = {}
        for k in keys:
            vals = [(v[m][k], v[ref][k], v[base][k]) for v in by.values()]
            mean = [sum(x[i] for x in vals) / len(vals) for i in range(3)]
            out[m][k] = {"per_seed": [gain_ratio(*x) for x in vals], "of_means": gain_ratio(*mean)}
    return out


def pooled_progress(per_seed: dict[int, list[dict]]) -> dict:
    """Per model: the per-episode progress E_j - E_{j-1} of every trace of every seed, summarised by episode index."""
    pooled: dict = {}
    for rows in per_seed.values():
        for r in rows:
            if r.get("episodes"):
                pooled.setdefault(r["model"], []).extend(r["episodes"]["outcomes"])
    return {m: progress_summary(episode_progress(o)) for m, o in pooled.items()}


def summarize(per_seed: dict[int, list[dict]]) -> list[dict]:
    """One row per model: for each metric its mean over seeds, the 95% half-width and the per-seed values."""
    n_lin = num_linearized(per_seed)
    models = list(dict.fromkeys(r["model"] for rows in per_seed.values() for r in rows))
    rows = []
    for m in models:
        vals = [metrics_of(r, n_lin) for rows_ in per_seed.values() for r in rows_ if r["model"] == m]
        row = {"model": m, "seeds": len(vals)}
        for k in vals[0]:
            mean, half = mean_interval([v[k] for v in vals])
            row[f"{k}_mean"], row[f"{k}_ci95"], row[f"{k}_values"] = mean, half, [v[k] for v in vals]
        rows.append(row)
    return rows


def paired_vs(per_seed: dict[int, list[dict]], ref: str) -> list[dict]:
    """Each other model minus `ref`, seed by seed (same seed: same prompts order and eval draws), mean +- 95%."""
    out = []
    n_lin = num_linearized(per_seed)
    by = {s: {r["model"]: metrics_of(r, n_lin) for r in rows} for s, rows in per_seed.items()}
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


def claim_lines(paired: list[dict], budgets: list[int], train_budget: int | None = None) -> list[str]:
    """The paper's claim, per MRT mode against GRPO: lower normalised regret, higher accuracy at the small budgets
    and past the training budget, pass@1 no lower."""
    lines = []
    train_budget = budgets[-1] if train_budget is None else train_budget
    acc_budgets = [b for b in budgets if b != train_budget]
    for r in paired:
        if not r["model"].startswith("mrt"):
            continue
        parts = [f"regret@{b} {verdict(r[f'regret@{b}_mean'], r[f'regret@{b}_ci95'], lower_is_better=True)}"
                 for b in budgets]
        parts += [f"acc@{b} {verdict(r[f'acc@{b}_mean'], r[f'acc@{b}_ci95'], lower_is_better=False)}"
                  for b in acc_budgets]
        parts.append(f"pass@1 {verdict(r['pass@1_mean'], r['pass@1_ci95'], lower_is_better=False)}")
        lines.append(f"  {r['model'].split(' ')[0]} vs grpo: " + ", ".join(parts))
    return lines


# ------------------------------------------------------------------------------------------------------- printing

def _num(x: float, scale: float, digits: int = 1) -> str:
    if x != x:
        return "-"
    text = f"{scale * x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text   # no "-0.0"


def _cell(row: dict, k: str, scale: float, digits: int = 1) -> str:
    mean, half = row[f"{k}_mean"], row[f"{k}_ci95"]
    return _num(mean, scale, digits) + ("" if half != half or mean != mean else f" ± {scale * half:.{digits}f}")


def _scale(k: str) -> tuple[float, int]:
    return (1.0, 0) if k == "tokens" else (1.0, 2) if k == "episodes" else (100.0, 1)


def table(rows: list[dict], keys: list[str] | None = None) -> str:
    """Markdown: accuracy in percent, regret in percent of the oracle's area (0 best), tokens and episodes as
    counts."""
    keys = keys or [k[:-5] for k in rows[0] if k.endswith("_mean")]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(_cell(r, k, *_scale(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def efficiency_table(eff: dict) -> str:
    lines = ["| model | budget to reach GRPO's acc@T | GRPO's budget / this one |", "|---|---|---|"]
    for m, d in eff.items():
        cells = []
        for key, digits in (("budget", 1), ("ratio", 2)):
            vals = d[key]
            got = [v for v in vals if v == v]
            if not got:
                cells.append("not reached")
                continue
            mean, half = mean_interval(got)
            cells.append(f"{mean:.{digits}f}" + ("" if half != half else f" ± {half:.{digits}f}")
                         + ("" if len(got) == len(vals) else f" ({len(got)} of {len(vals)} seeds reach it)"))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gain_table(gains: dict) -> str:
    keys = list(next(iter(gains.values())))
    lines = ["| model | " + " | ".join(f"{k}: of seed means (per seed)" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for m, d in gains.items():
        lines.append(f"| {m} | " + " | ".join(
            f"{_num(d[k]['of_means'], 1.0, 2)} ({', '.join(_num(v, 1.0, 2) for v in d[k]['per_seed'])})"
            for k in keys) + " |")
    return "\n".join(lines) + "\n"


def progress_table(progress: dict) -> str:
    """Per model and episode index: traces with that episode, mean progress, quantiles, share up / down."""
    lines = ["| model | episode j | traces | mean E_j - E_{j-1} | q10 / q50 / q90 | share > 0 | share < 0 |",
             "|---|---|---|---|---|---|---|"]
    for m, rows in progress.items():
        for p in rows:
            q = p["quantiles"]
            lines.append(f"| {m} | {p['episode']} | {p['n']} | {_num(p['mean'], 1.0, 3)} | "
                         f"{_num(q['0.1'], 1.0, 2)} / {_num(q['0.5'], 1.0, 2)} / {_num(q['0.9'], 1.0, 2)} | "
                         f"{_num(p['share_positive'], 1.0, 2)} | {_num(p['share_negative'], 1.0, 2)} |")
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


def plot_tokens(per_seed: dict[int, list[dict]], train_budget: int, path: Path, title: str) -> Path:
    """accuracy_vs_tokens.png: each model's accuracy on the eval's grid, mean over seeds with its 95% band."""
    from mrt.eval.plots import plot_accuracy_vs_tokens
    series = {}
    for m in dict.fromkeys(r["model"] for rows in per_seed.values() for r in rows):
        curves = [accuracy_curve(r) for rows in per_seed.values() for r in rows if r["model"] == m]
        x = curves[0][0]
        stats = [mean_interval([c[1][i] for c in curves]) for i in range(len(x))]
        series[m] = (x, [a for a, _ in stats], [h for _, h in stats])
    return plot_accuracy_vs_tokens(series, train_budget, path, title=title)


# ------------------------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (seed, seed + 1, ...)")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--steps", type=int, help="RL steps (default: by size)")
    ap.add_argument("--problems", type=int, help="held-out problems (default: by size)")
    ap.add_argument("--samples", type=int, help="samples per held-out problem (default: by size)")
    ap.add_argument("--budgets", help="comma-separated output-token budgets (default: T/2, T, 2T, 4T with T the "
                    "preset's rollout.max_new_tokens, within the model's context)")
    ap.add_argument("--curve-every", type=int, help="the eval's grid of forced points, tokens (default: by task)")
    ap.add_argument("--rounds", type=int, help="extrapolation rounds, 0: off (default: by size)")
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                    help=f"comma-separated subset of {','.join(RUNS)} (default: {','.join(DEFAULT_RUNS)})")
    ap.add_argument("--runs-dir", help="default: runs/mrt_vs_grpo (arithmetic), runs/mrt_vs_grpo_<task>")
    ap.add_argument("--skip-train", action="store_true", help="evaluate the checkpoints already in --runs-dir")
    ap.add_argument("--jobs", type=int, default=1, help="train.py runs (and evaluations) at once, each with "
                    "OMP_NUM_THREADS=1 and its output in a log file")
    ap.add_argument("--base", help="the base (SFT) model, evaluated and trained from (default: the preset's "
                    "model.path)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--temperature", type=float, default=0.7, help="eval sampling temperature (the training one)")
    ap.add_argument("--out", help="default: bench_results/mrt_vs_grpo.json (arithmetic), "
                    "bench_results/mrt_vs_grpo_<task>.json")
    ap.add_argument("--train-arg", action="append", default=[], help="extra train.py override (repeatable)")
    args = ap.parse_args(argv)
    suffix = "" if args.task == "arithmetic" else f"_{args.task}"
    args.out = args.out or str(ROOT / "bench_results" / f"mrt_vs_grpo{suffix}.json")
    args.runs_dir = args.runs_dir or str(ROOT / "runs" / f"mrt_vs_grpo{suffix}")
    if not args.out.endswith(".json"):
        ap.error(f"--out names the JSON file to write (plots go beside it), got {args.out!r}")
    if args.jobs < 1 or args.seeds < 1:
        ap.error("--jobs and --seeds must be >= 1")
    size = SIZES[args.size]
    for k in ("steps", "problems", "samples", "rounds"):
        if getattr(args, k) is None:
            setattr(args, k, size[k])
    args.round_tokens = size["round_tokens"]
    args.runs = [r for r in args.runs.split(",") if r]
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        ap.error(f"unknown runs {unknown}; known: {sorted(RUNS)}")
    task = args.task = TASKS[args.task]
    args.preset, preset = task_preset(task)
    args.base_given = args.base is not None
    try:
        args.base = args.base or resolve_base(preset)
    except Exception as exc:  # noqa: BLE001 (a missing or broken model folder: one line, not a traceback)
        ap.error(f"the base model of {args.preset.name} ({preset['model']['path']}): {exc}")
    args.train_budget = int(preset["rollout"]["max_new_tokens"])
    episodes = preset.get("episodes") or {}
    args.episode_markers = list(episodes.get("markers") or ["Wait"])
    args.episode_min_paragraphs = int(episodes.get("min_paragraphs") or 1)
    args.curve_every = args.curve_every or task.curve_every
    args.data = f"{task.name}:{args.problems}"
    args.budget_notes = []
    if args.budgets:
        args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    else:
        from mrt.eval.problems import load_dataset
        termination = load_dataset(f"{task.name}:1").termination_text
        args.budgets, args.budget_notes = task_budgets(args.train_budget,
                                                       max_fitting_budget(args.base, args.data, task, termination))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seeds = list(range(args.seed, args.seed + args.seeds))
    out = Path(args.out)
    T = args.train_budget
    preset = args.preset.relative_to(ROOT) if args.preset.is_relative_to(ROOT) else args.preset
    print(f"task {args.task.name}: preset {preset}, base {args.base}, training budget T = {T}, eval budgets "
          f"{args.budgets}", flush=True)
    for note in args.budget_notes:
        print(f"note: {note}", flush=True)
    t0 = time.perf_counter()
    budget = train_all(args, seeds)
    t_train = time.perf_counter() - t0
    per_seed = evaluate_all(args, seeds, out.with_suffix(""))
    t_eval = time.perf_counter() - t0 - t_train

    rows = summarize(per_seed)
    paired = paired_vs(per_seed, "grpo") if "grpo" in args.runs else []
    k = args.samples
    head = ["pass@1", f"maj@{k}", f"pass@{k}", "tokens"]
    accs = [f"acc@{b}" for b in args.budgets]
    regrets = [f"regret@{b}" for b in args.budgets]
    n_lin = num_linearized(per_seed)
    # Printed: episodes 0..PRINT_EPISODES-1 and the last index (every index is in the JSON).
    shown = sorted({j for j in range(n_lin) if j < PRINT_EPISODES} | ({n_lin - 1} if n_lin else set()))
    lin = ["episodes"] + [f"after_ep{j}" for j in shown] if n_lin else []
    print(f"\n{args.task.name}: held-out {args.problems} problems x {args.samples} samples at T {args.temperature}; "
          f"{len(seeds)} seed(s); mean ± 95% t-interval over seeds; accuracy and regret in %; training budget T = {T} "
          f"tokens, budgets past it: {[b for b in args.budgets if b > T]}")
    print(f"maj@{k} votes on {args.task.vote}; pass@1, maj@{k}, pass@{k} and tokens are the traces' own answers "
          f"within the largest budget ({args.budgets[-1]}), acc@b the answer forced at budget b (budget forcing)")
    print(table(rows, head + accs))
    print("normalised regret at each budget (% of the oracle's area, 0 best):")
    print(table(rows, regrets))
    if lin:
        print("answer forced after episode j (%; past a trace's last episode its own outcome counts), episodes a "
              "trace:")
        print(table(rows, lin))
    eff = gains = {}
    if paired:
        print("paired by seed, each model minus GRPO (for regret, negative means lower regret than GRPO's):")
        print(table(paired, head + accs))
        print(table(paired, regrets + lin))
        if len(seeds) >= 3:   # two seeds that happen to agree give a zero-width interval: no verdict from them
            print("the paper's claim (better / worse: the 95% interval of the paired difference excludes 0):")
            print("\n".join(claim_lines(paired, args.budgets, T)))
        else:
            print("the paper's claim: no verdict from fewer than 3 seeds")
        eff = efficiency_of(per_seed, T)
        targets = ", ".join(f"{100 * t:.1f}%" for t in eff["grpo"]["target"])
        print(f"\ntoken efficiency: the budget at which each model reaches GRPO's accuracy at T = {T} (target per "
              f"seed: {targets}), read linearly off its accuracy on the grid of every {args.curve_every} tokens; the "
              f"paper: GRPO's budget / MRT's = 1.2-1.6")
        print(efficiency_table(eff))
        if "base" in {r["model"] for r in rows}:
            gains = gain_ratios(per_seed, ["pass@1"] + ([f"acc@{T}"] if T in args.budgets else []))
            print("gain ratio (model - base) / (GRPO - base); the paper: about 2 for MRT:")
            print(gain_table(gains))
    progress = pooled_progress(per_seed)
    if progress:
        print("per-episode progress E_j - E_{j-1} (E_{-1} = 0; the paper's Fig. 16), pooled over seeds:")
        print(progress_table({m: rows[:PRINT_EPISODES] for m, rows in progress.items()}))
        if any(len(rows) > PRINT_EPISODES for rows in progress.values()):
            print(f"(episodes {PRINT_EPISODES} and later: in the JSON, key progress_distribution)")
    print("sample budget per run (traces generated over training):")
    for name, per in budget.items():
        print(f"  {name}: " + ", ".join(f"seed {s}: {b['samples']} samples, {b['generated_tokens']} tokens, "
                                        f"{b['train_loop_seconds']:.0f} s" for s, b in per.items()))
    plot = out.with_suffix("") / "accuracy_vs_budget.png"
    plot_budget(rows, args.budgets, plot)
    plot2 = plot_tokens(per_seed, T, out.with_suffix("") / "accuracy_vs_tokens.png",
                        f"{args.task.name}: accuracy against thinking tokens, mean over {len(seeds)} seed(s), 95% band")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items()}
    payload = {"size": args.size, "task": args.task.name, "preset": str(args.preset), "base": args.base,
               "train_budget": T, "budgets": args.budgets, "budget_notes": args.budget_notes,
               "vote": args.task.vote, "seeds": seeds, "steps": args.steps, "problems": args.problems,
               "samples": args.samples, "train_seconds": t_train, "eval_seconds": t_eval,
               "threads": os.cpu_count(), "summary": rows, "paired_vs_grpo": paired,
               "token_efficiency": eff, "gain_ratio": gains,
               "episodes": {r["model"]: {k: r[f"{k}_values"] for k in ["episodes"]
                                         + [f"after_ep{j}" for j in range(n_lin)]} for r in rows} if n_lin else {},
               "progress_distribution": progress, "sample_budget": budget, "settings": settings,
               "results": {str(s): r for s, r in per_seed.items()}}
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}, {plot2}, {plot} and {out.with_suffix('')}/seed_*/ (results.json, results.md, plots)")
    return payload


if __name__ == "__main__":
    main()
