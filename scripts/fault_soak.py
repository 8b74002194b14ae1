"""Fault soak: kill a short training run with SIGKILL at random moments, resume it each time, and check that it ends
exactly where an uninterrupted run ends (final parameters and optimizer state bit for bit, every step's metrics but
the timings), on the CPU in fp32.

    python scripts/fault_soak.py [--runs 5] [--kills 6] [--steps 8] [--seed 0] [--out fault_soak.json] [--subprocess]

Each run: one uninterrupted reference, then the same run killed `--kills` times and resumed (`--checkpoint.resume`)
after each kill, then let finish. A kill lands at a random moment of one of these kinds:
- generate:   inside the engine's generation of a step (the k-th engine step of it, k random);
- update:     inside the update, before or after the optimizer step (after backward; the scheduler not yet stepped);
- checkpoint: inside a checkpoint write: after the weights, after the trainer state, after the manifest (before the
              rename), or after the rename (before pruning);
- between:    after a step's metrics are logged, before its checkpoint;
- timed:      SIGKILL from outside, at a random time after the child's last step record (whatever it was doing).
Each segment is a child process (a fork of this warmed-up process, or with --subprocess this script run anew with
`--child KIND:STEP:VARIANT`): it installs a patch that SIGKILLs its own process at that point (no hook in the trainer
itself), then runs train.py's entry point (mrt.cli.run_cli(mrt.trainer.main)).
Prints a table (kind, kills, resumed, equal) and writes the JSON report. The test suite runs a short version
(tests/trainer/test_faults_kill.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KINDS = ("generate", "update", "checkpoint", "between", "timed")
TIMING_KEYS = ("time/", "tokens_per_s", "update_tokens_per_s")


def train_args(out_dir: str, steps: int, every: int) -> list[str]:
    """A short run of the embedded tiny model (seconds on the CPU), fp32, a checkpoint every `every` steps."""
    return ["--optim.steps", str(steps), "--optim.prompts_per_step", "2", "--rollout.group_size", "4",
            "--rollout.max_new_tokens", "64", "--eval.held_out", "2", "--eval.samples", "1", "--eval.every", "0",
            "--logging.out_dir", out_dir, "--logging.progress_bar", "false", "--logging.plots", "false",
            "--checkpoint.every", str(every), "--checkpoint.keep_last", "2", "--optim.lr", "1e-3",
            "--optim.warmup_ratio", "0", "--data.num_problems", "32", "--meta_prover.prompt_branches", "true",
            "--rl.dynamic_sampling", "false", "--model.dtype", "float32"]


# ---- the child: a training run that kills itself at one chosen point ---------------------------------------------

def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(spec: str) -> None:
    """Patch the run so that its process SIGKILLs itself at spec = KIND:STEP:VARIANT (STEP: the step being made,
    1-based; VARIANT: which point of that kind); with a suffix @RANK, only in that rank of a torchrun group, and only
    in its first attempt (not after torchrun restarts the group)."""
    import mrt.checkpoint as ckpt
    import mrt.metrics_log
    from mrt.rollout import Engine
    from mrt.trainer import Trainer
    spec, _, only_rank = spec.partition("@")      # KIND:STEP:VARIANT@RANK: that rank, first attempt only
    if only_rank and (os.environ.get("RANK", "0") != only_rank
                      or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"):
        return
    kind, step, variant = spec.split(":")
    step, variant = int(step), int(variant)
    state = {"trainer": None, "engine_steps": 0}

    real_step = Trainer.train_step

    def train_step(self):
        state["trainer"] = self
        state["engine_steps"] = 0
        return real_step(self)
    Trainer.train_step = train_step

    def making(s: int) -> bool:
        tr = state["trainer"]
        return tr is not None and tr.step + 1 == s

    if kind == "generate":
        real = Engine.step

        def engine_step(self, hook, stats):
            if making(step):
                state["engine_steps"] += 1
                if state["engine_steps"] >= variant:
                    _die()
            return real(self, hook, stats)
        Engine.step = engine_step
    elif kind == "update":
        real_update = Trainer.update

        def update(self, batch, adv):
            if self.step + 1 == step:
                real_opt_step = self.optimizer.step

                def opt_step(*a, **k):
                    if variant == 0:
                        _die()                   # after backward, before the parameters change
                    out = real_opt_step(*a, **k)
                    _die()                       # parameters changed, the scheduler not yet stepped
                    return out
                self.optimizer.step = opt_step
            return real_update(self, batch, adv)
        Trainer.update = update
    elif kind == "checkpoint":
        names = ["_save_model", "write_trainer_state", "write_manifest", "prune"]
        target = names[variant % len(names)]
        real_fn = getattr(ckpt, target)

        def killed_after(*a, **k):
            out = real_fn(*a, **k)
            tr = state["trainer"]
            if tr is not None and tr.step == step:
                _die()
            return out
        if target == "prune":          # after the rename: prune runs only with keep_last, which the run sets
            def killed_before_prune(*a, **k):
                tr = state["trainer"]
                if tr is not None and tr.step == step:
                    _die()
                return real_fn(*a, **k)
            setattr(ckpt, target, killed_before_prune)
        else:
            setattr(ckpt, target, killed_after)
    elif kind == "between":
        real_log = mrt.metrics_log.MetricsLogger.log

        def log(self, record, *, advance=True):
            real_log(self, record, advance=advance)
            if record.get("kind", "train") == "train" and record.get("step") == step:
                _die()
        mrt.metrics_log.MetricsLogger.log = log
    elif kind != "none":
        raise ValueError(f"unknown kill kind {kind!r}")


def child_main(spec: str, args: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    install_kill(spec)
    from mrt.cli import run_cli
    from mrt.trainer import main
    return run_cli(main, args)


# ---- the parent ---------------------------------------------------------------------------------------------------

def _train_records(out_dir: str) -> dict[int, dict]:
    recs = {}
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return recs
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("kind", "train") == "train":
                recs[int(r["step"])] = {k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)}
    return recs


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def final_state(out_dir: str, steps: int) -> dict:
    """What must match: the final checkpoint's weights and optimizer state (bytes), its trainer state but the RNG
    states (reseeded at each resume and never restored: every random draw of a step is seeded by the step), and
    every step's metrics but the timings."""
    path = os.path.join(out_dir, "checkpoints", f"step_{steps:08d}")
    if not os.path.isdir(path):
        return {"missing": path}
    with open(os.path.join(path, "trainer_state.json")) as f:
        ts = json.load(f)
    ts.pop("rng", None)
    return {"model": _digest(os.path.join(path, "model.safetensors")),
            "optimizer": _digest(os.path.join(path, "optimizer.safetensors")),
            "trainer_state": ts, "records": _train_records(out_dir)}


def compare(ref: dict, got: dict) -> list[str]:
    diffs = []
    for k in ("missing", "model", "optimizer", "trainer_state"):
        if ref.get(k) != got.get(k):
            diffs.append(k)
    rr, gr = ref.get("records", {}), got.get("records", {})
    if sorted(rr) != sorted(gr):
        diffs.append(f"logged steps {sorted(gr)} vs {sorted(rr)}")
    for s in sorted(set(rr) & set(gr)):
        bad = [k for k in set(rr[s]) | set(gr[s]) if not _same_value(rr[s].get(k), gr[s].get(k))]
        if bad:
            diffs.append(f"step {s}: {sorted(bad)[:6]}")
    return diffs


def _same_value(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


class _Forked:
    """A child made by os.fork (the parent's imports are reused: a start in a fraction of a second, not seconds),
    with the part of Popen's interface used here."""

    def __init__(self, spec: str, args: list[str], log):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                 # the child never returns into the caller
            code = 1
            try:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                code = child_main(spec, args)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("fork", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


FORK = False     # main() without --subprocess: children by os.fork of this warmed-up process (see warm_up)


def warm_up(work: str) -> None:
    """Pay the first-call costs (lazy imports, first forward, first save) in this process, so forked children start
    in a fraction of a second."""
    from mrt.config import load_config
    from mrt.trainer import Trainer
    tr = Trainer(load_config(None, train_args(os.path.join(work, "warm_up"), 1, 1)))
    tr.evaluate()
    tr.train_step()
    tr.save()


def _launch(spec: str, args: list[str], env: dict, log):
    if FORK:
        return _Forked(spec, args, log)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _last_checkpoint(out_dir: str) -> int:
    sys.path.insert(0, ROOT)
    from mrt.checkpoint import list_checkpoints
    ck = list_checkpoints(os.path.join(out_dir, "checkpoints"))
    return ck[-1][0] if ck else 0


def killed_run(out_dir: str, steps: int, every: int, kills: int, rng: random.Random, *, timeout: float = 300,
               kinds=KINDS, plan: list[str] | None = None) -> dict:
    """The run of train_args, killed `kills` times at random points and resumed after each -> its report.
    plan: the kinds of the kills in order (else each drawn from kinds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    args = train_args(out_dir, steps, every)
    os.makedirs(out_dir, exist_ok=True)
    events, resume = [], False
    log = open(os.path.join(out_dir, "soak.log"), "ab")
    for i in range(kills + 1):
        start = _last_checkpoint(out_dir) if resume else 0
        last = i == kills
        if last:
            kind, spec = "none", "none:0:0"
        else:
            kind = plan[i] if plan is not None else rng.choice(kinds)
            s = rng.randint(start + 1, steps) if start < steps else steps
            variant = {"generate": rng.randint(1, 40), "update": rng.randint(0, 1), "checkpoint": rng.randint(0, 3),
                       "between": 0, "timed": 0}[kind]
            if kind == "checkpoint":       # a step that writes a checkpoint (every `every` steps, and the last)
                s = min(steps, -(-s // every) * every)
            spec = f"{kind}:{s}:{variant}"
        p = _launch(spec if kind != "timed" else "none:0:0", args + (["--checkpoint.resume"] if resume else []),
                    env, log)
        t0 = time.monotonic()
        if kind == "timed":    # kill from outside at a random moment after the child's first new step record
            before = len(_train_records(out_dir))
            while p.poll() is None and len(_train_records(out_dir)) <= before and time.monotonic() - t0 < timeout:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            code = "hung"
        events.append({"kill": spec if kind != "timed" else "timed", "kind": kind, "exit": code,
                       "resumed_from": start, "seconds": round(time.monotonic() - t0, 2),
                       "killed": code == -signal.SIGKILL})
        if last and code != 0:
            events[-1]["error"] = f"the final run ended with {code}"
        resume = True
    log.close()
    return {"events": events, "state": final_state(out_dir, steps)}


def reference_run(out_dir: str, steps: int, every: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "soak.log"), "ab") as log:
        code = _launch("none:0:0", train_args(out_dir, steps, every), env, log).wait()
    if code != 0:
        raise RuntimeError(f"the reference run failed ({code}); see {out_dir}/soak.log")
    return final_state(out_dir, steps)


def soak(work: str, runs: int, kills: int, steps: int, every: int, seed: int, kinds=KINDS,
         every_kind: bool = True) -> dict:
    """every_kind: each run's kills go through the kinds in a shuffled order (all of them when kills >= their
    number), so every kind is tried; else each kill's kind is drawn at random."""
    rng = random.Random(seed)
    ref = reference_run(os.path.join(work, "reference"), steps, every)
    report = {"seed": seed, "steps": steps, "every": every, "runs": []}
    for r in range(runs):
        out = os.path.join(work, f"run{r}")
        shutil.rmtree(out, ignore_errors=True)
        plan = None
        if every_kind:
            plan = []
            while len(plan) < kills:
                plan += rng.sample(list(kinds), len(kinds))
            plan = plan[:kills]
        got = killed_run(out, steps, every, kills, rng, kinds=kinds, plan=plan)
        diffs = compare(ref, got["state"])
        report["runs"].append({"events": got["events"], "equal": not diffs, "diffs": diffs})
    return report


def table(report: dict) -> str:
    rows = {k: [0, 0, 0] for k in KINDS}      # kills tried, landed (process killed), runs that then ended equal
    for run in report["runs"]:
        for e in run["events"]:
            if e["kind"] in rows:
                rows[e["kind"]][0] += 1
                rows[e["kind"]][1] += bool(e["killed"])
                rows[e["kind"]][2] += run["equal"]
    lines = ["| kill point | kills tried | landed | in runs that ended bit-for-bit equal |", "|---|---|---|---|"]
    lines += [f"| {k} | {a} | {b} | {c} |" for k, (a, b, c) in rows.items()]
    n = len(report["runs"])
    lines.append(f"\nruns: {n}, equal to the uninterrupted run: {sum(r['equal'] for r in report['runs'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1], argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/fault_soak")
    p.add_argument("--out", default="fault_soak.json")
    p.add_argument("--subprocess", action="store_true",
                   help="each segment in a new interpreter (slower) instead of a fork of this warmed-up process")
    a = p.parse_args(argv)
    global FORK
    if not a.subprocess:
        warm_up(a.work)
        FORK = True
    report = soak(a.work, a.runs, a.kills, a.steps, a.every, a.seed)
    print(table(report))
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {a.out}")
    return 0 if all(r["equal"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
