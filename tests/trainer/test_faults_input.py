"""Bad input found by trying the project as a new user: each ends with exit code 2 and one `error:` line naming the
key, file or row (never a traceback)."""
from __future__ import annotations

import os
import subprocess
import sys

from mrt.cli import run_cli
from mrt.trainer import main

from .real_models import ROOT

FAST = ["--optim.steps", "1", "--logging.progress_bar", "false", "--logging.plots", "false"]


def _one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_non_utf8_row_names_the_file_and_row(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"problem": "1 + 1", "answer": "2"}\n\n{"problem": "caf\xe9 2 + 2", "answer": "4"}\n')
    assert run_cli(main, ["--data.path", str(data), "--data.format", "jsonl", "--data.chat_template", "false",
                          "--logging.out_dir", str(tmp_path / "run"), *FAST]) == 2
    err = _one_error(capsys.readouterr().err)
    assert f"{data}: row 1: line 3 is not valid UTF-8 (byte 0xe9" in err, err
    arr = tmp_path / "a.json"
    arr.write_bytes(b'[{"problem": "caf\xe9", "answer": "4"}]')
    assert run_cli(main, ["--data.path", str(arr), "--data.format", "jsonl", "--data.chat_template", "false",
                          "--logging.out_dir", str(tmp_path / "run"), *FAST]) == 2
    assert f"{arr}: not valid UTF-8 (byte 0xe9 at offset 17)" in _one_error(capsys.readouterr().err)


def test_unknown_reward_is_a_config_error(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--reward", "mathh"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 2, p.stderr[-2000:]
    err = _one_error(p.stderr)
    assert "reward: unknown reward 'mathh' (known: [" in err and "'math'" in err, err
