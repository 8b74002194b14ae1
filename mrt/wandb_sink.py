"""Weights & Biases as an optional sink of the run's log (`logging.wandb: {project, name, mode}`).

wandb is an optional dependency (`pip install wandb`, or the `wandb` extra), imported only when logging.wandb.project
is set; asked for and missing, the run stops before its first step with one `error: logging.wandb.project: ...` line
(a ConfigError, exit 2, on every rank: `check_available` looks the package up without importing it). Rank 0 then
starts one wandb run in `<logging.out_dir>/wandb` (mode `offline` writes only that folder, for `wandb sync` later;
`online` streams; `disabled` keeps the calls as no-ops) with the resolved config as the run's config, logs every
numeric scalar of every record at the record's step (the same keys as metrics.jsonl and TensorBoard; non-finite
values, stored there as text, are left out as TensorBoard leaves them), and at the end the plots as images
(`plots/<name>`). A resumed run is a new wandb run unless wandb's own WANDB_RUN_ID and WANDB_RESUME are set.
"""
from __future__ import annotations

import importlib.util
import os

from .config import ConfigError, WandbConfig


def check_available(settings: WandbConfig | None) -> bool:
    """Whether wandb is asked for; ConfigError (one line) if it is and is not installed."""
    if settings is None or settings.project is None:
        return False
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb.project: wandb is not installed (pip install wandb); or remove logging.wandb "
                          "from the config")
    return True


def scalars(record: dict) -> dict:
    """The record's numeric values but the step (bools and text, e.g. "kind" or a non-finite value, left out)."""
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class WandbSink:
    def __init__(self, settings: WandbConfig, out_dir: str, config: dict | None = None):
        import wandb
        self._wandb = wandb
        folder = os.path.abspath(out_dir)
        os.makedirs(folder, exist_ok=True)
        self.run = wandb.init(project=settings.project, name=settings.name, mode=settings.mode, dir=folder,
                              config=config or {})

    def log(self, record: dict) -> None:
        values = scalars(record)
        if values:
            self.run.log(values, step=int(record.get("step", 0)))

    def finish(self, plots: list[str] = ()) -> None:
        """Log the end-of-run plots as images (at the run's last step) and close the run."""
        images = {f"plots/{os.path.splitext(os.path.basename(p))[0]}": self._wandb.Image(p)
                  for p in plots if os.path.exists(p)}
        if images:
            self.run.log(images)
        self.run.finish()
