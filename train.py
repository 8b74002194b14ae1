"""Train a model with MRT (or its GRPO baseline): `torchrun --standalone --nproc_per_node=1 train.py`.

With no arguments: the embedded default (configs/tiny_mrt.yaml: the tiny model on the Countdown task, on the CPU).
Otherwise `--config FILE` (a YAML preset) and dotted overrides such as `--rl.alpha 0.5 --optim.steps 100`;
`--checkpoint.resume` (or `--resume`) continues from the latest checkpoint.
A mistake in the config, the data, the model folder or the tokenizer ends the run with one `error: ...` line naming
the key, file or row, and exit code 2, on every rank (mrt/errors.py, mrt/cli.py).
"""
import sys

from mrt.cli import run_cli
from mrt.trainer import main

if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
