"""The Python entry points (`from mrt import Trainer, load_config`): a run from a notebook or script, in one process,
without torchrun.

    from mrt import Trainer, load_config
    cfg = load_config("configs/tiny_mrt.yaml", {"optim.steps": 20, "logging.out_dir": "runs/notebook"})
    result = Trainer(cfg).train()
    rewards = [r["reward"] for r in result["records"] if r["kind"] == "train"]
    print(result["after"]["eval/accuracy"], rewards[-1])

`load_config(source, overrides)`: source is None (the embedded default), a YAML file (a path; `mrt:` paths are in
the package), a mapping of sections as a YAML preset holds them, or a Config (copied); overrides are a mapping of
dotted keys to values (`{"rl.alpha": 0.5}`) or command-line strings (`["--rl.alpha", "0.5"]`). Errors are the
command line's ConfigError, naming the key.

`Trainer(cfg).train()` returns {"before": eval record, "after": eval record, "records": every record logged (the
lines of metrics.jsonl: "kind" "train" a step, "eval" an evaluation), "step", "interrupted"}. Without WORLD_SIZE in
the environment the trainer runs on one process (the GPU if there is one, else the CPU); under torchrun it is the
same class the command line uses.
"""
from __future__ import annotations

import dataclasses

from .config import Config, ConfigError, config_from_dict
from .config import load_config as _load_file


def load_config(source: str | dict | Config | None = None, overrides: dict | list[str] | None = None) -> Config:
    """A validated Config from source (None, a YAML path, a mapping of sections or a Config) and overrides."""
    if source is None or isinstance(source, str):
        if isinstance(overrides, dict):       # read the file, then apply the typed overrides
            return config_from_dict(_load_file(source).to_dict(), overrides)
        return _load_file(source, overrides)
    if isinstance(source, Config):
        return config_from_dict(dataclasses.asdict(source), overrides)
    if isinstance(source, dict):
        return config_from_dict(source, overrides)
    raise ConfigError(f"config: expected a YAML path, a mapping or a Config, got {type(source).__name__}")


__all__ = ["load_config"]
