"""benchmarks/gpu_check.sh before a GPU minute is spent on it: its dry run lists every step and finds every file, flag
and benchmark it calls; the checker it uses catches a wrong flag, a value outside a flag's choices and a missing
path; and the Python drivers of its engine and training steps run end to end at their tiny CPU size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
STEPS = ("build", "gpu_tests", "engine", "train_step", "bench_logprobs", "bench_attention", "bench_advantages",
         "summary")


def _run(args, **kw):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV, **kw)


def test_dry_run_lists_and_checks_every_step():
    proc = _run(["bash", "benchmarks/gpu_check.sh", "--dry-run"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and " s  " in line]
    assert tuple(listed) == STEPS, proc.stdout
    assert "0 command(s) with problems" in proc.stdout
    for script in ("gpu_engine_check.py --size gpu", "gpu_train_check.py --size gpu", "check_dispatch.py",
                   "bench_attention.py --size gpu", "pytest -q -rfE -m gpu tests/kernels tests/engine"):
        assert script in proc.stdout, script


def test_unknown_option_is_refused():
    proc = _run(["bash", "benchmarks/gpu_check.sh", "--dryrun"])
    assert proc.returncode == 2 and "usage" in proc.stdout


@pytest.mark.parametrize("command,problem", [
    ("python benchmarks/bench_attention.py --size gpu --bogus 1", "unknown flag --bogus"),
    ("python benchmarks/bench_attention.py --size huge", "--size 'huge' is not one of"),
    ("python benchmarks/no_such_bench.py --size gpu", "does not exist"),
    ("python -m pytest -m gpu tests/no_such_folder", "pytest path tests/no_such_folder does not exist"),
    ("python -m pytest -m nosuchmarker tests/engine", "marker 'nosuchmarker' is not registered"),
])
def test_the_checker_catches(command, problem):
    proc = _run([sys.executable, "scripts/check_commands.py", command])
    assert proc.returncode == 1 and problem in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_engine_driver_at_tiny_size(tmp_path):
    out = tmp_path / "engine.json"
    proc = _run([sys.executable, "benchmarks/gpu_engine_check.py", "--size", "tiny", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["errors"] and set(report["parts"]) == {"graphs", "decode", "forks"}
    graphs = report["parts"]["graphs"]
    assert graphs["identical"] and graphs["graph_steps"] > 0 and not graphs["captured"]
    methods = [r["method"] for r in report["parts"]["decode"]["rows"]]
    assert methods == ["engine, CUDA graphs", "engine, eager", "transformers generate"]
    forks = report["parts"]["forks"]["rows"]
    assert forks[0]["tokens_computed"] < forks[1]["tokens_computed"] < forks[2]["tokens_computed"]


def test_train_driver_at_tiny_size(tmp_path):
    out = tmp_path / "train.json"
    proc = _run([sys.executable, "benchmarks/gpu_train_check.py", "--size", "tiny", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["agreement"]["ok"] and [r["backend"] for r in report["rows"]] == ["fused (auto)", "reference"]
    assert report["rows"][0]["grad_norm"] > 0
