"""`python -m mrt.plan --config FILE [--gpu h100|h200|cpu] [--gpus N] [--json] [--section.key VALUE ...]`.

Any config the trainer takes, with train.py's dotted overrides (`--model.path DIR`: a folder holding only a
config.json is enough). Plan options: `--metrics FILE` (trace lengths and episodes of a real run's metrics.jsonl),
`--workload FILE` (measured traces, mrt/plan/workload.py), `--coarsen K` (decode tokens per simulated scheduler step;
default by max_new_tokens, step.auto_coarsen), `--seed N`, `--gpu-check` (the plan's predictions for the rows of
benchmarks/gpu_check.sh, mrt/plan/gpu_check.py). A bad option or config prints one `error: ...` line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message):            # one `error:` line (mrt.cli.run_cli), not argparse's usage + exit
        raise ConfigError(message)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m mrt.plan", description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--config", default=None, help="a YAML preset (default: the embedded default)")
    ap.add_argument("--gpu", default="h100", help="h100 | h200 | cpu (cpu: measured on this machine now)")
    ap.add_argument("--gpus", type=int, default=None, help="ranks (default 8 on h100/h200, 1 on cpu)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--metrics", default=None, help="a run's metrics.jsonl: trace lengths and episodes")
    ap.add_argument("--workload", default=None, help="measured traces (JSON, see mrt/plan/workload.py)")
    ap.add_argument("--coarsen", type=int, default=None, help="decode tokens per simulated step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                    help="price decode steps as CUDA graph replays (auto: when the engine has them)")
    ap.add_argument("--gpu-check", action="store_true", help="predict benchmarks/gpu_check.sh's rows")
    return ap


def main(argv: list[str]) -> dict:
    args, overrides = parser().parse_known_args(argv)
    if args.gpu_check:
        from .gpu_check import format_predictions, predict_gpu_check
        rows = predict_gpu_check(gpu=args.gpu)
        print(json.dumps(rows, indent=1) if args.json else format_predictions(rows))
        return {"gpu_check": rows}
    from .planner import make_plan
    from .report import format_plan
    plan = make_plan(args.config, overrides, gpu=args.gpu, gpus=args.gpus, metrics=args.metrics,
                     workload=args.workload, coarsen=args.coarsen, seed=args.seed,
                     cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs])
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return plan


def run(argv: list[str] | None = None) -> int:
    from ..cli import run_cli
    return run_cli(main, list(sys.argv[1:] if argv is None else argv))
