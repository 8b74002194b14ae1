"""Dynamic sampling's two filters under MRT dense, over seeds, compared at the same sample budget.

`rl.dynamic_sampling_filter outcome` drops a group whose rewards are all equal (DAPO's rule); `advantage` (the
default) drops a group only when its traces get the same advantages at every token position, so an outcome-tied
group whose episodes made different progress keeps MRT's signal (mrt/trainer.py, `_signal_groups`). Each run is the
embedded default with one filter; both are trained for the same steps, and since the filters keep different
numbers of groups they generate different numbers of traces: held-out accuracy is read at the smaller run's total
samples (linear in the cumulative samples between two held-out evaluations) as well as at the last step.

Prints per filter the mean +- 95% t-interval over seeds and the paired difference (advantage - outcome) of: held-out
sampled accuracy and normalised regret at equal samples and at the end, the samples generated, sampling rounds a step,
the training reward's last fifth, and what the filter saw: the share of groups with tied outcomes, of groups without
signal by their advantages, of tied groups that carry a progress spread, and that spread's mean.

    python benchmarks/dynamic_sampling_filters.py --seeds 3 --steps 100 --jobs 2
    python benchmarks/dynamic_sampling_filters.py --seeds 3 --steps 100 --skip-train     # re-read the runs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mrt.eval.stats import mean_interval  # noqa: E402
from mrt_vs_grpo import sample_budget  # noqa: E402

FILTERS = ("outcome", "advantage")


def train_command(filter_: str, seed: int, steps: int, eval_every: int, out_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--rl.dynamic_sampling", "true", "--rl.dynamic_sampling_filter",
            filter_, "--seed", str(seed), "--optim.steps", str(steps), "--eval.every", str(eval_every),
            "--logging.out_dir", str(out_dir), "--logging.progress_bar", "false", *extra]


def train_all(args, seeds: list[int]) -> None:
    """Run every (filter, seed) training, `--jobs` at a time."""
    pending = [(f, s) for s in seeds for f in FILTERS]
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            f, s = pending.pop(0)
            out = Path(args.runs_dir) / f"seed_{s}" / f
            cmd = train_command(f, s, args.steps, args.eval_every, out, args.train_arg)
            print("+", " ".join(cmd), flush=True)
            out.mkdir(parents=True, exist_ok=True)
            running.append(subprocess.Popen(cmd, cwd=ROOT, stdout=open(out / "train.log", "w"),
                                            stderr=subprocess.STDOUT))
        time.sleep(2)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            if p.returncode != 0:
                raise SystemExit(f"training failed ({p.returncode}): {' '.join(p.args)}")


def read_run(run_dir: Path) -> dict:
    """Per-step training records and held-out evaluations of one run, with the cumulative samples at each step."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in recs if r.get("kind", "train") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    G = sample_budget(run_dir)["group_size"]
    cum = np.cumsum([r["prompts_generated"] * G for r in train])          # samples generated through step i + 1
    samples_at = {r["step"]: int(c) for r, c in zip(train, cum)} | {0: 0}
    fifth = max(len(train) // 5, 1)
    return {"train": train, "evals": evals, "samples_at": samples_at, "samples": int(cum[-1]) if len(cum) else 0,
            "reward_first_fifth": float(np.mean([r["reward"] for r in train[:fifth]])),
            "reward_last_fifth": float(np.mean([r["reward"] for r in train[-fifth:]]))}


def at_samples(run: dict, key: str, budget: float) -> float:
    """A held-out metric read at `budget` cumulative samples, linear between the two evaluations around it."""
    xs = [run["samples_at"][e["step"]] for e in run["evals"]]
    ys = [e[key] for e in run["evals"]]
    return float(np.interp(budget, xs, ys))


def measures(run: dict, budget: float) -> dict[str, float]:
    train, last = run["train"], run["evals"][-1]
    mean = lambda k: float(np.mean([r.get(k, float("nan")) for r in train]))   # noqa: E731
    return {
        "acc@equal_samples": at_samples(run, "eval/accuracy", budget),
        "regret@equal_samples": at_samples(run, "eval/regret_normalized", budget),
        "acc@end": last["eval/accuracy"], "regret@end": last["eval/regret_normalized"],
        "acc_gain@end": last["eval/accuracy"] - run["evals"][0]["eval/accuracy"],
        "samples": run["samples"], "rounds_per_step": mean("sampling_rounds"),
        "reward_last_fifth": run["reward_last_fifth"],
        "reward_gain": run["reward_last_fifth"] - run["reward_first_fifth"],
        "tied_groups": mean("zero_variance_groups"), "no_signal_groups": mean("no_signal_groups"),
        "tied_groups_with_signal": mean("tied_groups_with_signal"), "tied_group_spread": mean("tied_group_spread"),
    }


def fmt(mean: float, half: float) -> str:
    big = abs(mean) >= 100
    return (f"{mean:.0f}" if big else f"{mean:.3f}") + ("" if half != half else
                                                           (f" ± {half:.0f}" if big else f" ± {half:.3f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once (OMP_NUM_THREADS=1 each is best)")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "dynamic_sampling_filters"))
    ap.add_argument("--skip-train", action="store_true", help="read the runs already in --runs-dir")
    ap.add_argument("--train-arg", action="append", default=[], help="extra train.py override (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "dynamic_sampling_filters.json"))
    args = ap.parse_args()
    seeds = list(range(args.seed, args.seed + args.seeds))
    t0 = time.perf_counter()
    if not args.skip_train:
        train_all(args, seeds)
    runs = {(f, s): read_run(Path(args.runs_dir) / f"seed_{s}" / f) for s in seeds for f in FILTERS}
    budget = min(r["samples"] for r in runs.values())
    per = {k: measures(r, budget) for k, r in runs.items()}
    keys = list(next(iter(per.values())))
    rows = []
    for f in FILTERS:
        row = {"filter": f}
        for k in keys:
            row[k] = mean_interval([per[(f, s)][k] for s in seeds])
        rows.append(row)
    diff = {"filter": "advantage - outcome"}
    for k in keys:
        diff[k] = mean_interval([per[("advantage", s)][k] - per[("outcome", s)][k] for s in seeds])
    rows.append(diff)
    print(f"\nMRT dense, {args.steps} steps, {len(seeds)} seed(s); equal samples = {budget} "
          f"(the smaller run's total); mean ± 95% t-interval over seeds")
    print("| filter | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for row in rows:
        print(f"| {row['filter']} | " + " | ".join(fmt(*row[k]) for k in keys) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": seeds, "steps": args.steps, "equal_samples": budget,
                               "summary": [{k: list(v) if isinstance(v, tuple) else v for k, v in r.items()}
                                           for r in rows],
                               "per_seed": {f"{f}/seed_{s}": m for (f, s), m in per.items()},
                               "seconds": time.perf_counter() - t0}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
