"""Checkpoints of the trainer: resume continues exactly, Ctrl-C writes one, the folder loads in transformers."""
from __future__ import annotations

import os

import pytest
import torch

from mrt.checkpoint import latest_checkpoint, list_checkpoints
from mrt.trainer import Trainer

from .trainer_helpers import tiny_config

KEYS = ("reward", "accuracy", "length", "regret", "entropy", "loss", "grad_norm", "episodes")


def test_resume_gives_the_same_next_step(tmp_path):
    full = Trainer(tiny_config(tmp_path / "a", "--optim.steps", "3"))
    recs = [full.train_step() for _ in range(3)]

    part = Trainer(tiny_config(tmp_path / "b", "--optim.steps", "3"))
    part.train_step()
    part.train_step()
    part.save()
    resumed = Trainer(tiny_config(tmp_path / "b", "--optim.steps", "3", "--checkpoint.resume"))
    assert resumed.resume() and resumed.step == 2
    rec = resumed.train_step()
    assert rec["step"] == recs[2]["step"] == 3
    diff = {k: (rec[k], recs[2][k]) for k in KEYS if rec[k] != pytest.approx(recs[2][k], rel=1e-5, abs=1e-7)}
    assert not diff, f"resumed step differs from the uninterrupted one: {diff}"
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-7, msg=k)


def test_train_resumes_and_keeps_last(tmp_path):
    cfg = tiny_config(tmp_path, "--optim.steps", "3", "--checkpoint.every", "1", "--checkpoint.keep_last", "2")
    out = Trainer(cfg).train()
    assert out["step"] == 3 and not out["interrupted"]
    assert [s for s, _ in list_checkpoints(cfg.checkpoint_dir)] == [2, 3]
    assert out["after"]["eval/accuracy"] >= 0.0 and os.path.exists(tmp_path / "metrics.jsonl")
    more = tiny_config(tmp_path, "--optim.steps", "4", "--checkpoint.resume")
    out2 = Trainer(more).train()
    assert out2["step"] == 4
    steps = [r["step"] for r in out2["records"] if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4], steps      # metrics.jsonl continues without repeats


def test_ctrl_c_writes_a_checkpoint(tmp_path, monkeypatch):
    tr = Trainer(tiny_config(tmp_path, "--optim.steps", "5"))
    real, calls = tr.train_step, []

    def step():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real()
    monkeypatch.setattr(tr, "train_step", step)
    out = tr.train()
    assert out["interrupted"] and out["step"] == 2
    assert latest_checkpoint(tr.cfg.checkpoint_dir).endswith("step_00000002")


def test_checkpoint_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tr = Trainer(tiny_config(tmp_path, "--optim.steps", "1"))
    tr.train_step()
    path = tr.save()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("Question : 3 + 4 - 2\nAnswer :\n", add_special_tokens=False)["input_ids"]
    x = torch.tensor(ids)
    from mrt.models import packed_metadata
    with torch.no_grad():
        want = hf(x[None]).logits[0].double()
        h = tr.model(x, torch.arange(len(ids)), packed_metadata([len(ids)]))
        got = tr.model.compute_logits(h).double()
    err = (got - want).abs().max().item()
    assert err < 1e-4, f"logits of the saved checkpoint differ by {err}"
