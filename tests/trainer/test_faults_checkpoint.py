"""Checkpoints that long runs meet: a planted pickle, a truncated or missing file, a garbled manifest, a full disk.

A checkpoint holds no pickle (safetensors + JSON, read without running code); each carries a manifest written last
that resume checks; a broken newest checkpoint is named and the newest good one taken; none left: one `error:` line;
a failed write stops the run with one line and leaves the previous checkpoint as it was.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle

import pytest
import torch

import mrt.checkpoint as ckpt
from mrt.checkpoint import (BrokenCheckpoint, CheckpointWriteError, LegacyCheckpoint, find_resumable,
                            list_checkpoints, load_checkpoint, save_checkpoint, verify)
from mrt.cli import run_cli
from mrt.trainer import Trainer, main

from .trainer_helpers import snapshot, tiny_config


class _Planted:
    """Unpickling this runs a shell command (the attack of issue 23: a downloaded checkpoint that runs code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant_legacy(folder, marker) -> None:
    """Turn a checkpoint folder into the old layout with a malicious trainer_state.pt."""
    for name in (ckpt.MANIFEST, ckpt.TRAINER_STATE, ckpt.OPTIMIZER):
        os.remove(os.path.join(folder, name))
    with open(os.path.join(folder, ckpt.LEGACY_STATE), "wb") as f:
        pickle.dump({"step": 1, "optimizer": _Planted(str(marker)), "scheduler": None, "rng": None, "extra": {}}, f)


def _digests(folder) -> dict:
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder))}


@pytest.fixture
def run(tmp_path):
    """A run with checkpoints at steps 1 and 2 (trainer and the config that resumes it)."""
    cfg = tiny_config(tmp_path, "--optim.steps", "2", "--checkpoint.every", "1", "--checkpoint.keep_last", "3")
    tr = Trainer(cfg)
    for _ in range(2):
        tr.train_step()
        tr.save()
    return tr, tmp_path


def _resumed(tmp_path, *extra):
    return Trainer(tiny_config(tmp_path, "--optim.steps", "3", "--checkpoint.resume", *extra))


def test_checkpoint_has_no_pickle_and_round_trips(run):
    tr, tmp_path = run
    path = list_checkpoints(tr.cfg.checkpoint_dir)[-1][1]
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            head = f.read(2)
        assert head != b"\x80\x04" and not name.endswith((".pt", ".pkl", ".bin")), name     # no pickle protocol
    manifest = verify(path)
    assert set(manifest["files"]) == set(os.listdir(path)) - {ckpt.MANIFEST}
    again = _resumed(tmp_path)
    assert again.resume(log=lambda m: None) and again.step == 2
    for (k, a), b in zip(tr.optimizer.state_dict()["state"].items(), again.optimizer.state_dict()["state"].values()):
        for name in a:
            assert torch.equal(a[name], b[name]), (k, name)
    assert tr.optimizer.state_dict()["param_groups"] == again.optimizer.state_dict()["param_groups"]
    assert tr.scheduler.state_dict() == again.scheduler.state_dict()


def test_planted_pickle_is_refused_and_never_run(run, capsys):
    tr, tmp_path = run
    for _, path in list_checkpoints(tr.cfg.checkpoint_dir):
        _plant_legacy(path, tmp_path / "pwned")
    with pytest.raises(LegacyCheckpoint, match="trainer_state.pt: a checkpoint of the old layout.*convert_legacy"):
        _resumed(tmp_path).resume(log=lambda m: None)
    # Through the command line: one error line, exit code 2, and the pickle never ran.
    args = ["--optim.steps", "3", "--checkpoint.resume", "--logging.out_dir", str(tmp_path),
            "--logging.progress_bar", "false", "--logging.plots", "false", "--rl.dynamic_sampling", "false"]
    assert run_cli(main, args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "step_00000002/trainer_state.pt" in err[0] and "pickle" in err[0], err
    assert not (tmp_path / "pwned").exists(), "unpickling the planted trainer_state.pt ran its command"


def test_convert_legacy_on_request(run):
    """A trusted old-layout checkpoint (the state pickled by torch.save, as before) is converted and resumed."""
    tr, tmp_path = run
    path = list_checkpoints(tr.cfg.checkpoint_dir)[-1][1]
    state = ckpt.read_trainer_state(path)
    for name in (ckpt.MANIFEST, ckpt.TRAINER_STATE, ckpt.OPTIMIZER):
        os.remove(os.path.join(path, name))
    torch.save(state, os.path.join(path, ckpt.LEGACY_STATE))
    with pytest.raises(LegacyCheckpoint):
        _resumed(tmp_path).resume(log=lambda m: None)
    lines = []
    again = _resumed(tmp_path, "--checkpoint.convert_legacy")
    assert again.resume(log=lines.append) and again.step == 2
    assert any("converted" in m for m in lines), lines
    assert not os.path.exists(os.path.join(path, ckpt.LEGACY_STATE))
    verify(path)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


@pytest.mark.parametrize("damage,named", [
    ("truncate_model", "model.safetensors: "),
    ("flip_model", "model.safetensors: checksum differs"),
    ("remove_optimizer", "optimizer.safetensors: missing"),
    ("garble_manifest", "manifest.json: cannot be read"),
    ("remove_manifest_entry", "optimizer.safetensors: missing (not in the manifest)"),
])
def test_broken_newest_falls_back_to_the_newest_good(run, damage, named):
    tr, tmp_path = run
    (_, old), (_, new) = list_checkpoints(tr.cfg.checkpoint_dir)[-2:]
    model = os.path.join(new, "model.safetensors")
    if damage == "truncate_model":
        with open(model, "r+b") as f:
            f.truncate(os.path.getsize(model) // 2)
    elif damage == "flip_model":
        with open(model, "r+b") as f:
            f.seek(os.path.getsize(model) - 3)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 1]))
    elif damage == "remove_optimizer":
        os.remove(os.path.join(new, ckpt.OPTIMIZER))
    elif damage == "garble_manifest":
        with open(os.path.join(new, ckpt.MANIFEST), "r+b") as f:
            f.truncate(17)
    else:
        m = json.load(open(os.path.join(new, ckpt.MANIFEST)))
        del m["files"][ckpt.OPTIMIZER]
        os.remove(os.path.join(new, ckpt.OPTIMIZER))
        json.dump(m, open(os.path.join(new, ckpt.MANIFEST), "w"))
    lines = []
    assert find_resumable(tr.cfg.checkpoint_dir, lines.append) == old
    assert len(lines) == 2 and named in lines[0] and "skipping step_00000002" in lines[0], lines
    assert "resuming from" in lines[1] and lines[1].endswith("step_00000001 instead")
    with pytest.raises(BrokenCheckpoint, match=named.split(":")[0]):
        load_checkpoint(new)
    again = _resumed(tmp_path)
    assert again.resume(log=lambda m: None) and again.step == 1


def test_no_good_checkpoint_left_is_one_error_line(run, capsys):
    tr, tmp_path = run
    for _, path in list_checkpoints(tr.cfg.checkpoint_dir):
        os.remove(os.path.join(path, "model.safetensors"))
    args = ["--optim.steps", "3", "--checkpoint.resume", "--logging.out_dir", str(tmp_path),
            "--logging.progress_bar", "false", "--logging.plots", "false", "--rl.dynamic_sampling", "false"]
    assert run_cli(main, args) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "checkpoint.dir: none of the 2 checkpoints" in err[0], captured.err
    assert "model.safetensors: missing" in err[0] and "Traceback" not in captured.err
    assert captured.out.count("skipping") == 2


def test_disk_full_stops_with_one_line_and_keeps_the_previous(run, monkeypatch, capsys):
    tr, tmp_path = run
    root = tr.cfg.checkpoint_dir
    prev = list_checkpoints(root)[-1][1]
    before = _digests(prev)
    real = ckpt.write_trainer_state

    def full(folder, state):
        real(folder, state)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ckpt, "write_trainer_state", full)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*step_00000002 is as it was") as e:
        save_checkpoint(root, 3, tr.model, optimizer=tr.optimizer, keep_last=1)
    assert e.value.errno == errno.ENOSPC
    assert _digests(prev) == before and [s for s, _ in list_checkpoints(root)] == [1, 2]
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]
    # The trainer: a periodic save that fails ends the run (one error line, exit 2), step 2's checkpoint intact.
    model_before = snapshot(tr.model)
    args = ["--optim.steps", "4", "--checkpoint.resume", "--checkpoint.every", "1", "--logging.out_dir",
            str(tmp_path), "--logging.progress_bar", "false", "--logging.plots", "false", "--rl.dynamic_sampling",
            "false", "--optim.prompts_per_step", "2", "--rollout.group_size", "4", "--rollout.max_new_tokens", "64",
            "--eval.held_out", "4", "--eval.samples", "1", "--data.num_problems", "64"]
    assert run_cli(main, args) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "writing step 3" in err[0] and "No space left on device" in err[0], captured.err
    assert _digests(prev) == before
    assert find_resumable(root, lambda m: None) == prev
    assert snapshot(tr.model).keys() == model_before.keys()


def test_resaving_a_step_never_leaves_it_missing(run, monkeypatch):
    """The final save after a periodic one rewrites the same step: a failure keeps the first copy."""
    tr, _ = run
    root = tr.cfg.checkpoint_dir
    path = list_checkpoints(root)[-1][1]
    before = _digests(path)

    def full(folder, step):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ckpt, "write_manifest", full)
    with pytest.raises(CheckpointWriteError):
        save_checkpoint(root, 2, tr.model, optimizer=tr.optimizer)
    assert _digests(path) == before
