"""MRT against GRPO on the embedded default: train the tiny model with GRPO, MRT (dense) and MRT (sum) from the same
seed and the same number of steps, then evaluate the base model and the three runs on held-out synthetic problems
with every measurement of `mrt.eval` (pass@1, maj@k, accuracy at budgets, normalised regret, extrapolation).

    python benchmarks/mrt_vs_grpo.py --size cpu            # minutes on 2 CPU cores
    python benchmarks/mrt_vs_grpo.py --size gpu            # more steps, problems and samples
    python benchmarks/mrt_vs_grpo.py --skip-train          # re-evaluate the checkpoints of an earlier run

Training goes through train.py's own command line (`--rl.algo grpo|mrt --rl.advantage_mode dense|sum --seed
--optim.steps --logging.out_dir`); the final checkpoint is the newest Hugging Face folder (config.json +
*.safetensors) under each run's out_dir. Prints the table and writes bench_results/mrt_vs_grpo.json, with
results.json, results.md and the plots in bench_results/mrt_vs_grpo/.
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

from mrt.eval import EvalConfig, markdown_table, run  # noqa: E402

SIZES = {
    # steps of RL, held-out problems, samples per problem, budgets (output tokens), extrapolation rounds
    "cpu": dict(steps=250, problems=64, samples=4, budgets=[16, 32, 48, 64, 96], rounds=2, round_tokens=32),
    "gpu": dict(steps=200, problems=256, samples=16, budgets=[16, 32, 48, 64, 96, 128], rounds=4, round_tokens=48),
}
RUNS = {  # name -> train.py overrides
    "grpo": ["--rl.algo", "grpo"],
    "mrt-dense": ["--rl.algo", "mrt", "--rl.advantage_mode", "dense"],
    "mrt-sum": ["--rl.algo", "mrt", "--rl.advantage_mode", "sum"],
}


def newest_checkpoint(run_dir: Path) -> Path:
    found = [p.parent for p in run_dir.rglob("config.json") if any(p.parent.glob("*.safetensors"))]
    if not found:
        raise SystemExit(f"no checkpoint (config.json + *.safetensors) under {run_dir}")
    return max(found, key=lambda d: d.stat().st_mtime)


def train(name: str, overrides: list[str], steps: int, seed: int, out_dir: Path, extra: list[str]) -> float:
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, "--seed", str(seed), "--optim.steps", str(steps),
           "--logging.out_dir", str(out_dir), *extra]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="RL steps (default: by size)")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "mrt_vs_grpo"))
    ap.add_argument("--skip-train", action="store_true", help="evaluate the checkpoints already in --runs-dir")
    ap.add_argument("--base", default=str(ROOT / "mrt" / "assets" / "tiny_model"), help="the base model folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "mrt_vs_grpo.json"))
    ap.add_argument("--train-arg", action="append", default=[], help="extra train.py override (repeatable)")
    args = ap.parse_args()
    size = dict(SIZES[args.size])
    steps = args.steps or size["steps"]

    runs_dir = Path(args.runs_dir)
    train_seconds = {}
    for name, overrides in RUNS.items():
        if not args.skip_train:
            train_seconds[name] = train(name, overrides, steps, args.seed, runs_dir / name, args.train_arg)
    models = [f"base={args.base}"] + [f"{name}={newest_checkpoint(runs_dir / name)}" for name in RUNS]

    out = Path(args.out)
    cfg = EvalConfig(models=models, data=[f"arithmetic:{size['problems']}"], out=str(out.with_suffix("")),
                     budgets=size["budgets"], samples=size["samples"], temperature=0.9, seed=args.seed,
                     answer_tokens=8, curve_every=8, extrapolation_rounds=size["rounds"],
                     round_tokens=size["round_tokens"], eval_every=1, markers=["Wait ,"],
                     think_end=["The answer is"], device=args.device, progress=False)
    t0 = time.perf_counter()
    results = run(cfg)
    eval_seconds = time.perf_counter() - t0

    print()
    print(markdown_table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": args.size, "seed": args.seed, "steps": steps, "train_seconds": train_seconds,
                               "eval_seconds": eval_seconds, "threads": os.cpu_count(), "results": results},
                              indent=2, default=str))
    print(f"wrote {out} and {cfg.out}/ (results.json, results.md, plots)")


if __name__ == "__main__":
    main()
