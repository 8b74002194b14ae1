"""logging.wandb (mrt.wandb_sink): the run's scalars, plots and config reach wandb; a missing package is one error line.

Three layers: a stand-in `wandb` module records what the trainer hands it (every scalar of every record at its step,
the plots as images, the resolved config; runs without wandb installed); a real offline run writes its run folder
with no network (skipped where wandb is not installed: it is an optional dependency); and a run that asks for wandb
where it is missing ends with one `error: logging.wandb.project: ...` line and exit code 2.
"""
from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import json
import os
import types

import pytest

from mrt.config import ConfigError
from mrt.cli import run_cli
from mrt.trainer import Trainer, main
from mrt.wandb_sink import check_available, scalars

from .trainer_helpers import tiny_config

WANDB = ["--logging.wandb.project", "mrt-tests", "--logging.wandb.name", "tiny", "--logging.wandb.mode", "offline"]


class _FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged: list[tuple[dict, int | None]] = []
        self.finished = False

    def log(self, values: dict, step: int | None = None):
        self.logged.append((values, step))

    def finish(self):
        self.finished = True


def _fake_wandb(monkeypatch) -> types.ModuleType:
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    mod.runs = []

    def init(**kwargs):
        mod.runs.append(_FakeRun(**kwargs))
        return mod.runs[-1]

    mod.init = init
    mod.Image = lambda path: ("image", path)
    monkeypatch.setitem(__import__("sys").modules, "wandb", mod)
    return mod


def test_every_scalar_the_plots_and_the_config_reach_wandb(tmp_path, monkeypatch):
    fake = _fake_wandb(monkeypatch)
    cfg = tiny_config(tmp_path, "--logging.plots", "true", *WANDB)
    result = Trainer(cfg).train()
    assert len(fake.runs) == 1
    run = fake.runs[0]
    assert run.init["project"] == "mrt-tests" and run.init["name"] == "tiny" and run.init["mode"] == "offline"
    assert run.init["dir"] == os.path.abspath(tmp_path)
    assert run.init["config"] == cfg.to_dict() and run.init["config"]["rl"]["algo"] == "mrt"
    with open(tmp_path / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    # Every record of metrics.jsonl, its numeric values at its step, in order; then the plots, then finish.
    assert [(scalars(r), r["step"]) for r in lines] == run.logged[:len(lines)]
    assert len(lines) == len(result["records"]) == 4 and "reward" in run.logged[1][0]
    assert "eval/accuracy" in run.logged[0][0] and "kind" not in run.logged[0][0]
    images, step = run.logged[len(lines)]
    assert step is None and sorted(images) == ["plots/progress_by_episode", "plots/regret", "plots/reward_accuracy"]
    assert all(kind == "image" and os.path.exists(p) for kind, p in images.values())
    assert len(run.logged) == len(lines) + 1 and run.finished


def test_scalars_leave_out_text_bools_and_the_step():
    rec = {"kind": "train", "step": 3, "reward": 0.5, "loss": "nan", "skipped": 0.0, "flag": True, "n": 4}
    assert scalars(rec) == {"reward": 0.5, "skipped": 0.0, "n": 4}


def test_missing_wandb_is_one_error_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert check_available(None) is False
    with pytest.raises(ConfigError, match=r"logging\.wandb\.project: wandb is not installed \(pip install wandb\)"):
        check_available(tiny_config(tmp_path, *WANDB).logging.wandb)
    argv = ["--optim.steps", "1", "--logging.progress_bar", "false", "--logging.out_dir", str(tmp_path / "run"),
            "--eval.held_out", "2", "--data.num_problems", "16", *WANDB]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: logging.wandb.project: wandb is not installed"), lines[0]


def test_wandb_mode_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"logging\.wandb\.mode: must be one of \['online', 'offline', 'disabled'\]"):
        tiny_config(tmp_path, "--logging.wandb.mode", "cloud")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb (optional) is not installed")
def test_offline_run_writes_its_folder(tmp_path, monkeypatch):
    """A real wandb in offline mode: the run folder under logging.out_dir/wandb, with its log and the plot images."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_config(tmp_path, "--logging.plots", "true", "--optim.steps", "1", *WANDB)
    Trainer(cfg).train()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1, os.listdir(tmp_path)
    (log,) = glob.glob(os.path.join(runs[0], "run-*.wandb"))
    data = open(log, "rb").read()
    # The history's keys and the config's sections are stored as text inside the run's protobuf log.
    for key in (b"reward", b"eval/accuracy", b"progress/episode_0", b"grad_norm", b"meta_prover", b"mrt-tests"):
        assert key in data, key
    pngs = sorted(os.path.basename(p).split("_")[0] for p in
                  glob.glob(os.path.join(runs[0], "files", "media", "images", "plots", "*.png")))
    assert pngs == ["progress", "regret", "reward"], pngs
