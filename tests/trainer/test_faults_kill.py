"""Resume equals never stopping, wherever a SIGKILL lands: a short run is killed during generation, inside the update,
inside a checkpoint write, between steps and at a random moment from outside, resumed after each kill, and must end
exactly where the uninterrupted run ends: final weights and optimizer state bit for bit, the metrics of every step
(timings aside), on the CPU in fp32. scripts/fault_soak.py is the long version (more runs, more kills)."""
from __future__ import annotations

import os

import pytest

from .real_models import import_script

SEED = int(os.environ.get("MRT_FAULT_SEED", "5"))


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_equals_the_uninterrupted_run(tmp_path):
    soak = import_script("fault_soak")
    # Each segment in a new interpreter, not a fork of this process: earlier tests ran torch's OpenMP pool here with
    # several threads, and a fork of a process whose OpenMP threads exist can deadlock in the child (it did, without
    # OMP_NUM_THREADS=1).
    assert not soak.FORK
    report = soak.soak(str(tmp_path), runs=1, kills=5, steps=4, every=2, seed=SEED)
    run = report["runs"][0]
    events = run["events"]
    kinds = sorted(e["kind"] for e in events if e["kind"] != "none")
    assert kinds == sorted(soak.KINDS), events
    landed = [e for e in events if e["killed"]]
    # A kill aimed at a point the resumed run no longer reaches (its step already checkpointed) does not land.
    assert len(landed) >= 3, events
    assert events[-1]["exit"] == 0, events
    assert run["equal"], f"the killed and resumed run differs from the uninterrupted one: {run['diffs']}; {events}"
    assert "| generate |" in soak.table(report)


def test_compare_finds_a_difference():
    """The comparison can fail: a changed weight digest or one step's metric is reported."""
    soak = import_script("fault_soak")
    ref = {"model": "a", "optimizer": "b", "trainer_state": {"step": 4}, "records": {1: {"loss": 1.0}, 2: {"x": 2}}}
    assert soak.compare(ref, ref) == []
    got = dict(ref, model="c", records={1: {"loss": 1.0 + 1e-12}, 2: {"x": 2}})
    assert soak.compare(ref, got) == ["model", "step 1: ['loss']"]
