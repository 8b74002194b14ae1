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
