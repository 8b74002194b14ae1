"""Faults and bad inputs: non-finite losses skip steps and then stop the run; bad settings are clear errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mrt.update
from mrt.config import ConfigError
from mrt.data import DataError
from mrt.meta_prover import MetaProver
from mrt.trainer import MAX_BAD_STEPS, Trainer, TrainingStopped, main

from .trainer_helpers import snapshot, tiny_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _nan_loss(monkeypatch):
    real = mrt.update.policy_loss

    def poisoned(*a, **kw):
        loss, stats = real(*a, **kw)
        return loss * float("nan"), stats
    monkeypatch.setattr(mrt.update, "policy_loss", poisoned)


def test_non_finite_loss_skips_the_step(tmp_path, monkeypatch):
    tr = Trainer(tiny_config(tmp_path))
    before = snapshot(tr.model)
    _nan_loss(monkeypatch)
    rec = tr.train_step()
    assert rec["skipped"] == 1.0 and tr.bad_steps == 1
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in a skipped step"
    monkeypatch.undo()
    rec = tr.train_step()
    assert rec["skipped"] == 0.0 and tr.bad_steps == 0


def test_non_finite_losses_in_a_row_stop_the_run(tmp_path, monkeypatch):
    tr = Trainer(tiny_config(tmp_path, "--optim.steps", str(MAX_BAD_STEPS + 2)))
    _nan_loss(monkeypatch)
    with pytest.raises(TrainingStopped, match="in a row"):
        tr.train()
    assert tr.step == MAX_BAD_STEPS
    lines = open(tmp_path / "metrics.jsonl").read().splitlines()
    assert sum('"skipped": 1.0' in line for line in lines) == MAX_BAD_STEPS


@pytest.mark.parametrize("args,match", [
    (["--rl.bogus", "1"], "rl.bogus: unknown config key"),
    (["--rl.algo", "ppo"], "rl.algo: must be one of"),
    (["--optim.lr", "fast"], "optim.lr: expected a number"),
    (["--rl.normalize_progress", "true"], "rl.normalize_progress: removed"),
    (["--logging.every", "2"], "logging.every: removed"),
    (["--config"], "--config: needs a file"),
])
def test_bad_settings_name_the_key(tmp_path, args, match):
    with pytest.raises(ConfigError, match=match):
        main(args + ["--logging.out_dir", str(tmp_path)] if args != ["--config"] else args)


def test_bad_data_names_the_file(tmp_path):
    bad = tmp_path / "data.jsonl"
    bad.write_text('{"problem": "1 + 2", "answer": "3"}\n{"question": "x"}\n')
    cfg = tiny_config(tmp_path, "--data.path", str(bad), "--data.format", "jsonl", "--reward", "math")
    with pytest.raises(DataError, match=r"data.jsonl: row 1: missing column 'problem'"):
        Trainer(cfg)
    cfg = tiny_config(tmp_path, "--data.path", str(tmp_path / "none.jsonl"), "--data.format", "jsonl")
    with pytest.raises(DataError, match="no such file"):
        Trainer(cfg)


def test_too_few_rows_for_the_held_out_split(tmp_path):
    good = tmp_path / "data.jsonl"
    good.write_text('{"problem": "1 + 2", "answer": "3"}\n' * 3)
    cfg = tiny_config(tmp_path, "--data.path", str(good), "--data.format", "jsonl", "--eval.held_out", "3")
    with pytest.raises(ConfigError, match="eval.held_out"):
        Trainer(cfg)


def test_meta_prover_rejects_bad_arguments():
    with pytest.raises(ValueError, match="m must be >= 1"):
        MetaProver(None, None, termination_ids=[1], m=0, answer_max_tokens=2, temperature=0.6, top_p=0.95,
                   max_tokens=8)
    with pytest.raises(ValueError, match="termination_ids"):
        MetaProver(None, None, termination_ids=[], m=2, answer_max_tokens=2, temperature=0.6, top_p=0.95,
                   max_tokens=8)


def test_train_py_reports_a_bad_key(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--optim.stepz", "3"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "optim.stepz: unknown config key" in p.stderr, p.stderr
