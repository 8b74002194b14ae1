"""A dying rank ends the run promptly: the survivor exits within seconds (not at the process group's timeout) with one
line naming the lost rank (mrt.watchdog), whether it waits in a collective or works outside one."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from mrt.distributed import PG_TIMEOUT_S, pg_timeout_s

from .real_models import ROOT

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode,why", [("collective", "ended"), ("busy", "ended"), ("bug", "a bug in rank 1")])
def test_survivor_names_the_lost_rank_within_seconds(mode, why):
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_RANK=str(rank), PYTHONPATH=ROOT)
        procs.append(subprocess.Popen([sys.executable, WORKER, mode], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    t0 = time.monotonic()
    try:
        _, err0 = procs[0].communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    took = time.monotonic() - t0
    errors = [line for line in err0.splitlines() if line.startswith("error: ")]
    assert procs[0].returncode == 1, err0[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1 of 2 is gone") and why in errors[0], err0[-3000:]
    assert "Traceback" not in err0, err0[-3000:]
    assert took < 30, f"the survivor took {took:.1f} s"


def test_process_group_timeout_by_backend(monkeypatch):
    monkeypatch.delenv("MRT_PG_TIMEOUT_S", raising=False)
    assert pg_timeout_s("gloo") == PG_TIMEOUT_S["gloo"] == 600 and pg_timeout_s("nccl") == 1800
    monkeypatch.setenv("MRT_PG_TIMEOUT_S", "42")
    assert pg_timeout_s("gloo") == 42
    monkeypatch.setenv("MRT_PG_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="MRT_PG_TIMEOUT_S"):
        pg_timeout_s("gloo")


def _torchrun(tmp_path, name: str, spec: str, restarts: int) -> tuple[subprocess.CompletedProcess, float, str]:
    from .real_models import import_script
    soak = import_script("fault_soak")
    out = str(tmp_path / name)
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node=2",
           "--max-restarts", str(restarts), os.path.join(ROOT, "scripts", "fault_soak.py"), "--child", spec, "--",
           *soak.train_args(out, 4, 2), "--checkpoint.resume"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, time.monotonic() - t0, out


@pytest.mark.slow
def test_torchrun_restarts_after_a_rank_dies_and_ends_equal(tmp_path):
    """Rank 1 of 2 is SIGKILLed inside step 3's update (first attempt only): rank 0 names it and ends, torchrun
    --max-restarts 1 starts the group again, it resumes from step 2's checkpoint and ends with the parameters, the
    optimizer state and the metrics of an uninterrupted 2-rank run."""
    from .real_models import import_script
    soak = import_script("fault_soak")
    ref, ref_s, ref_out = _torchrun(tmp_path, "reference", "none:0:0", 0)
    assert ref.returncode == 0, _key_lines(ref.stderr)
    got, got_s, got_out = _torchrun(tmp_path, "killed", "update:3:0@1", 1)
    assert got.returncode == 0, _key_lines(got.stderr)
    log = got.stdout + got.stderr
    assert "resumed at step 2" in log, log[-3000:]
    lost = [line for line in log.splitlines() if "error: rank 1 of 2 is gone" in line]
    assert lost or "local_rank: 1" in log, log[-3000:]      # rank 0's line, or at least torchrun's naming rank 1
    # The failure costs a restart (seconds), not a process group's timeout (10 minutes on gloo).
    assert got_s < ref_s + 120, (got_s, ref_s)
    diffs = soak.compare(soak.final_state(ref_out, 4), soak.final_state(got_out, 4))
    assert not diffs, (diffs, _key_lines(log))


def _key_lines(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if "rror" in line or "File" in line or "exitcode" in line
                     or "resumed" in line)[-5000:]
