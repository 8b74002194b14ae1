"""Train a model with MRT (or its GRPO baseline): `torchrun --standalone --nproc_per_node=1 train.py`.

With no arguments: the embedded default (configs/tiny_mrt.yaml: the tiny model on the synthetic task, on the CPU).
Otherwise `--config FILE` (a YAML preset) and dotted overrides such as `--rl.alpha 0.5 --optim.steps 100`;
`--checkpoint.resume` (or `--resume`) continues from the latest checkpoint.
"""
import sys

from mrt.config import ConfigError
from mrt.trainer import TrainingStopped, main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, TrainingStopped) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
