"""Every mistake a user can make ends `train.py` with one `error: ...` line naming the key, file or row, and exit code
2, on every rank, with no traceback: under torchrun (2 ranks, each rank's own stderr) and in process (run_cli)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mrt.cli import run_cli
from mrt.trainer import main

from .real_models import ROOT, fixture_file, random_qwen2_folder

TINY = os.path.join(ROOT, "mrt", "assets", "tiny_model")
R1_PRESET = os.path.join(ROOT, "configs", "r1_distill_qwen_1p5b_mrt.yaml")
FAST = ["--optim.steps", "1", "--logging.progress_bar", "false", "--logging.plots", "false"]


def _torchrun(args: list[str], tmp_path, env_extra: dict | None = None) -> list[str]:
    """Run train.py under torchrun with 2 ranks; returns each rank's stderr (torchrun's --log-dir files)."""
    logs = tmp_path / "logs"
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node=2",
           "--log-dir", str(logs), "-r", "3", os.path.join(ROOT, "train.py"), *args,
           "--logging.out_dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    out = []
    for rank in (0, 1):
        found = [os.path.join(d, "stderr.log") for d, _, files in os.walk(logs)
                 if os.path.basename(d) == str(rank) and "stderr.log" in files]
        assert len(found) == 1, found
        with open(found[0]) as f:
            out.append(f.read())
    return out


def _check_one_line(stderr: str, *needles: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _in_process(argv: list[str], capsys, *needles: str) -> str:
    assert run_cli(main, argv) == 2
    return _check_one_line(capsys.readouterr().err, *needles)


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    return random_qwen2_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def math_rows(tmp_path_factory):
    """The first rows of the MATH training file (their prompts run to 100+ tokens with the Qwen tokenizer)."""
    src = fixture_file("train_math.jsonl")
    path = tmp_path_factory.mktemp("data") / "math.jsonl"
    with open(src) as f:
        path.write_text("".join(next(f) for _ in range(8)))
    return str(path)


# ---- under torchrun: 2 ranks, each rank's own output -------------------------------------------------------------

def test_overlong_prompt_under_torchrun(tmp_path, math_rows, qwen2_folder):
    """The issue's case: the R1 preset on MATH rows with a prompt over data.max_prompt_tokens."""
    ranks = _torchrun(["--config", R1_PRESET, "--model.path", qwen2_folder, "--model.dtype", "float32",
                       "--data.path", math_rows, "--eval.path", math_rows, "--data.max_prompt_tokens", "60"],
                      tmp_path)
    for err in ranks:
        _check_one_line(err, math_rows, "row 0", "data.max_prompt_tokens=60", "data.overlong")


def test_missing_model_folder_under_torchrun(tmp_path):
    ranks = _torchrun(["--model.path", str(tmp_path / "nosuch"), *FAST], tmp_path)
    for err in ranks:
        _check_one_line(err, "model.path", "nosuch", "no such folder")


def test_bad_config_key_under_torchrun(tmp_path):
    for err in _torchrun(["--rl.alphaa", "1"], tmp_path):
        _check_one_line(err, "rl.alphaa", "unknown config key")


# ---- in process: the same entry point (mrt.cli.run_cli around mrt.trainer.main) -------------------------------------

def test_missing_or_broken_config_file(tmp_path, capsys):
    _in_process(["--config", str(tmp_path / "nosuch.yaml")], capsys, "--config", "nosuch.yaml", "cannot be read")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl: [1, 2\n")
    _in_process(["--config", str(bad)], capsys, "bad.yaml", "not valid YAML")
    bad.write_text("rl:\n  alpha: fast\n")
    _in_process(["--config", str(bad)], capsys, "rl.alpha", "expected a number")


def test_malformed_data_row(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    _in_process(["--data.path", str(data), "--data.format", "jsonl", "--data.chat_template", "false", *FAST],
                capsys, str(data), "row 1", "missing column 'answer'")


def test_broken_model_folders(tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(TINY, model)
    (model / "model.safetensors").unlink()
    _in_process(["--model.path", str(model), *FAST], capsys, "model.path", "no model.safetensors")
    shutil.copy(os.path.join(TINY, "model.safetensors"), model / "model.safetensors")
    (model / "config.json").write_text("{not json")
    _in_process(["--model.path", str(model), *FAST], capsys, "model.path", "config.json", "cannot be read")
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    del cfg["hidden_size"]
    (model / "config.json").write_text(json.dumps(cfg))
    _in_process(["--model.path", str(model), *FAST], capsys, "model.path", "config.json", "hidden_size")
    _in_process(["--model.path", os.path.join(TINY, "config.json"), *FAST], capsys, "model.path", "is a file")


def test_tokenizer_that_cannot_load(tmp_path, capsys):
    model = tmp_path / "m"
    os.makedirs(model)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(TINY, name), model / name)
    _in_process(["--model.path", str(model), *FAST], capsys, "model.path", "tokenizer", "cannot be loaded")
    # A folder with a tokenizer config but no vocabulary: transformers returns a tokenizer of a few special tokens.
    r1 = fixture_file("model_configs", "DeepSeek-R1-Distill-Qwen-1.5B", "tokenizer_config.json")
    shutil.copy(r1, model / "tokenizer_config.json")
    _in_process(["--model.path", str(model), *FAST], capsys, "model.path", "cannot encode text")


def test_tokenizer_of_another_model(tmp_path, capsys):
    """The Qwen tokenizer's ids run past the tiny model's 100-odd rows: a mismatch, caught before training."""
    tok = fixture_file("tokenizers", "Qwen2.5-Math-1.5B")
    _in_process(["--model.tokenizer_path", tok, *FAST], capsys, "model.tokenizer_path", "do not match")


def test_hub_id_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _in_process(["--model.path", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", *FAST], capsys,
                "model.path", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "HF_HUB_OFFLINE=1")


# ---- data.overlong: skip ----------------------------------------------------------------------------------------

def test_overlong_skip_writes_its_rows_to_the_run_folder(tmp_path):
    from mrt.data import SKIP_REPORT
    from mrt.trainer import Trainer

    from .trainer_helpers import tiny_config
    data = tmp_path / "d.jsonl"
    rows = [{"problem": "Compute 1 + 2 .", "answer": "3"},
            {"problem": "Compute " + "1 + " * 40 + "1 .", "answer": "41"},
            {"problem": "Compute 2 + 2 .", "answer": "4"},
            {"problem": "Compute " + "2 + " * 40 + "2 .", "answer": "82"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(tmp_path / "run", "--data.path", str(data), "--data.format", "jsonl", "--eval.path", str(data),
                      "--data.max_prompt_tokens", "40", "--data.overlong", "skip", "--optim.steps", "1",
                      "--checkpoint.every", "0")
    tr = Trainer(cfg)
    assert [e.row for e in tr.train_data.examples] == [0, 2] and tr.train_data.overlong_rows == [1, 3]
    tr.train()
    report = json.loads((tmp_path / "run" / SKIP_REPORT).read_text())
    assert report["train"]["overlong"] == 2 and report["train"]["overlong_rows"] == [1, 3]
    assert report["eval"]["overlong_rows"] == [1, 3] and report["train"]["source"] == str(data)


# ---- what counts as a user error ----------------------------------------------------------------------------------

def test_every_user_error_class_is_a_user_error():
    """One base class: run_cli reports these as one line; each stays a ValueError for callers that catch that."""
    from mrt.checkpoint import BrokenCheckpoint, CheckpointWriteError, LegacyCheckpoint
    from mrt.config import ConfigError
    from mrt.data import DataError
    from mrt.errors import HubError, ModelFolderError, UserError
    from mrt.models import CheckpointError, MissingTokenizerError
    from mrt.reward_fn import RewardError
    from mrt.trainer import TrainingStopped
    for cls in (ConfigError, DataError, CheckpointError, ModelFolderError, HubError, TrainingStopped, BrokenCheckpoint,
                LegacyCheckpoint, CheckpointWriteError, RewardError, MissingTokenizerError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    assert issubclass(CheckpointWriteError, OSError) and issubclass(TrainingStopped, RuntimeError)


def test_run_cli_reports_user_errors_only(capsys):
    """A UserError: one `error:` line, exit code 2. Anything else, a plain ValueError included, is a bug: it keeps
    its traceback (run_cli lets it through)."""
    from mrt.errors import UserError

    def user_mistake(argv):
        raise UserError("data.path: no such\nfile")

    def bug(argv):
        raise ValueError("a bug")

    assert run_cli(user_mistake, []) == 2
    assert capsys.readouterr().err == "error: data.path: no such file\n"
    assert run_cli(lambda argv: None, []) == 0
    with pytest.raises(ValueError, match="a bug"):
        run_cli(bug, [])
