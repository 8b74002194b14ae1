"""Bad input, fuzzed: seeded mutations of the YAML config and of the data rows (JSONL, and Parquet where pyarrow is
installed) through `train.py --check` and `python -m mrt.eval --check`. Every case passes the check (exit 0) or ends
with exit code 2 and ONE `error:` line that names a key, a file or a row; never a traceback, never a hang.

In process (the entry points' own functions, run_cli(mrt.trainer.main) and mrt.eval.__main__.main): FUZZ_CASES
training cases and EVAL_CASES evaluation cases, seeded (FUZZ_SEED; MRT_FUZZ_SEED overrides it to explore). As real
subprocesses (marked slow): a few dozen of the same cases.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mrt.config import Config
from mrt.cli import run_cli

from .real_models import ROOT

FUZZ_SEED = int(os.environ.get("MRT_FUZZ_SEED", "23"))
FUZZ_CASES = 240
EVAL_CASES = 90
SUBPROCESS_CASES = 18
CASE_TIMEOUT_S = 30
TINY = os.path.join(ROOT, "mrt", "assets", "tiny_model")

# ---- what is mutated ------------------------------------------------------------------------------------------------


def _config_keys() -> list[str]:
    """Every dotted key of the training config."""
    out = []
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory)]
        else:
            out.append(f.name)
    return out


KEYS = _config_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS if "." in k})
VALUES = ["x", "", "  ", -1, 0, 1, 3, 10 ** 12, -10 ** 12, 1e308, -0.5, 0.5, 2.5, float("nan"), float("inf"), True,
          False, None, [1, 2], [], {"a": 1}, {}, "1e-3", "null", "yes", "../nonexistent", "org/name", "\u00e9\u4e2d",
          "a" * 5000, "mrt:nothing", "arithmetic", "jsonl", "parquet", "task"]
ROW_KINDS = ["no_problem", "no_answer", "empty_prompt", "blank_prompt", "huge_prompt", "int_prompt", "list_prompt",
             "null_prompt", "dict_prompt", "empty_answer", "null_answer", "list_answer", "bool_answer", "float_answer",
             "huge_answer", "non_utf8", "bad_json", "array_row", "number_row", "null_row", "nul_bytes", "bom",
             "empty_file", "blank_file", "extra_columns", "unicode"]


def _rows(n: int = 12) -> list[dict]:
    return [{"problem": f"Compute {i} + {i + 1} .", "answer": str(2 * i + 1)} for i in range(n)]


def _mutate_rows(rng: random.Random, kind: str) -> tuple[bytes, list]:
    """(JSONL bytes, the rows as objects where they still are objects) after one mutation of kind."""
    rows = _rows()
    i = rng.randrange(len(rows))
    r = rows[i]
    raw_line = None
    if kind == "no_problem":
        del r["problem"]
    elif kind == "no_answer":
        del r["answer"]
    elif kind.endswith("_prompt"):
        r["problem"] = {"empty": "", "blank": " \n\t ", "huge": "1 + " * rng.choice([200, 5000]) + "1 .", "int": 7,
                        "list": ["a"], "null": None, "dict": {"p": 1}}[kind.split("_")[0]]
    elif kind.endswith("_answer"):
        r["answer"] = {"empty": "", "null": None, "list": [1], "bool": True, "float": 3.5,
                       "huge": "9" * 100000}[kind.split("_")[0]]
    elif kind == "non_utf8":
        raw_line = json.dumps(r).encode().replace(b"Compute", b"Comp\xff\xfeute")
    elif kind == "bad_json":
        line = json.dumps(r)
        raw_line = line[:rng.randrange(1, len(line) - 1)].encode()
    elif kind in ("array_row", "number_row", "null_row"):
        raw_line = {"array_row": b"[1, 2]", "number_row": b"42", "null_row": b"null"}[kind]
    elif kind == "nul_bytes":
        r["problem"] = "Compute\x00 1 + 1 ."
    elif kind == "extra_columns":
        r["extra"] = {"nested": [1, {"x": None}]}
    elif kind == "unicode":
        r["problem"] = "Compute \u00e9 \u4e2d \U0001f600 1 + 1 ."
    lines = [json.dumps(x).encode() for x in rows]
    if raw_line is not None:
        lines[i] = raw_line
        rows[i] = None
    data = b"\n".join(lines) + b"\n"
    if kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "empty_file":
        data, rows = b"", []
    elif kind == "blank_file":
        data, rows = b"\n \n\t\n", []
    return data, rows


def _mutate_yaml(rng: random.Random, base: dict, data_path: str) -> tuple[bytes, str]:
    """(config file bytes, what was done) after one or two mutations of base."""
    tree = json.loads(json.dumps(base))
    what = []
    for _ in range(rng.choice([1, 1, 2])):
        kind = rng.choice(["value", "value", "value", "unknown", "section", "truncate", "encoding", "yaml_junk",
                           "not_mapping", "data_path"])
        what.append(kind)
        if kind == "value":
            key = rng.choice(KEYS)
            value = rng.choice(VALUES)
            if "." in key:
                sec, k = key.split(".")
                if not isinstance(tree.get(sec), dict):
                    tree[sec] = {}
                tree[sec][k] = value
            else:
                tree[key] = value
            what[-1] += f" {key}={value!r:.40}"
        elif kind == "unknown":
            sec = rng.choice(SECTIONS + [None])
            name = rng.choice(["bogus", "alpah", "stepz", "lr_", "Steps"])
            if sec is None:
                tree[name] = 1
            else:
                tree.setdefault(sec, {}) if isinstance(tree.get(sec), dict) else tree.__setitem__(sec, {})
                tree[sec][name] = 1
            what[-1] += f" {sec}.{name}"
        elif kind == "section":
            tree[rng.choice(SECTIONS)] = rng.choice([5, "x", [], [1, 2], None, True])
        elif kind == "data_path":
            tree["data"]["path"] = rng.choice([data_path + ".missing", os.path.dirname(data_path), "", "mrt:",
                                               "nosuch-task", "org/nosuch", data_path])
    text = yaml.safe_dump(tree, allow_unicode=True)
    raw = text.encode()
    if "not_mapping" in what:
        raw = rng.choice([b"- a\n- b\n", b"42\n", b"just text\n"])
    if "yaml_junk" in what:
        raw += rng.choice([b"\nrl: [1, 2\n", b"\n\tbad: tab\n", b"\nx: !!python/object:os.system {}\n",
                           b"\nrl: &a {alpha: *a}\n", b"\n: :\n", b"\nrl:\n  alpha: 1\n  alpha: 2\n"])
    if "truncate" in what:
        raw = raw[:rng.randrange(len(raw) + 1)]
    if "encoding" in what:
        raw = rng.choice([text.encode("utf-16"), text.encode("latin-1", "replace") + b"\xe9\xff\n",
                          b"\x00" + raw, raw.replace(b":", b"\xff:", 1)])
    return raw, ", ".join(what)


# ---- checking one case ----------------------------------------------------------------------------------------------

EVAL_KEYS = ["samples", "budgets", "temperature", "top_p", "limit", "prompt_column", "answer_column",
             "prompt_template", "chat_template", "verifier", "termination_text", "answer_tokens", "curve_every",
             "extrapolation_rounds", "round_tokens", "markers", "dtype", "device", "block_size", "max_num_seqs",
             "regret_interpolation", "bogus", "models", "data", "seed", "meta_top_p"]
NAMEABLE = [k.split(".")[-1] for k in KEYS] + KEYS + SECTIONS + EVAL_KEYS + ["--config", "row", "rows",
                                                                           "arguments", "--model", "--data",
                                                                           "unknown settings"]


def _verdict(code: int, out: str, err: str, files: list[str]) -> str | None:
    """Why the outcome is wrong, or None."""
    if "Traceback" in err or "Traceback" in out:
        return "a traceback"
    if code == 0:
        return None if out.startswith("check: ok") or "\ncheck: ok" in out else "exit 0 without 'check: ok'"
    if code != 2:
        return f"exit code {code}"
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if len(errors) != 1:
        return f"{len(errors)} error lines"
    line = errors[0]
    if any(f and f in line for f in files) or any(re.search(rf"(^|[\s'\"(]){re.escape(n)}\b", line[7:])
                                                  for n in NAMEABLE):
        return None
    return "the error names no key, file or row"


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"no answer in {CASE_TIMEOUT_S} s")


def _in_process(entry, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(argv)
            except _Hang:
                raise
            except BaseException as exc:  # noqa: BLE001 (a traceback is the failure being looked for)
                import traceback
                err.write("Traceback (in process)\n" + "".join(traceback.format_exception(exc)))
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def _train_entry(argv):
    from mrt.trainer import main
    return run_cli(main, argv)


def _eval_entry(argv):
    from mrt.eval.__main__ import main
    return main(argv)


# ---- the cases ------------------------------------------------------------------------------------------------------

def _train_case(rng: random.Random, folder) -> tuple[list[str], list[str], str]:
    """(argv, files to name, description) of one training case, its files written under folder."""
    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, "data.jsonl")
    kind = rng.choice(ROW_KINDS + ["none"] * 6)
    raw, _ = _mutate_rows(rng, kind) if kind != "none" else (b"".join(json.dumps(r).encode() + b"\n"
                                                                      for r in _rows()), None)
    with open(data, "wb") as f:
        f.write(raw)
    base = {"data": {"path": data, "format": "jsonl", "chat_template": False, "num_problems": 16},
            "eval": {"held_out": 4}, "optim": {"steps": 2},
            "logging": {"out_dir": os.path.join(folder, "run"), "progress_bar": False}}
    cfg = os.path.join(folder, "config.yaml")
    text, what = (yaml.safe_dump(base).encode(), "base") if rng.random() < 0.3 else _mutate_yaml(rng, base, data)
    with open(cfg, "wb") as f:
        f.write(text)
    argv = ["--check", "--config", cfg]
    if rng.random() < 0.15:       # a mutated override on the command line instead
        key = rng.choice(KEYS)
        argv += [f"--{key}", str(rng.choice(VALUES))]
        what += f"; --{key} {argv[-1][:30]!r}"
        if key.endswith(("path", "dir")):
            return argv, [data, cfg, argv[-1]], f"rows: {kind}; config: {what}"
    return argv, [data, cfg], f"rows: {kind}; config: {what}"


def _eval_case(rng: random.Random, folder) -> tuple[list[str], list[str], str]:
    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, "problems.jsonl")
    kind = rng.choice(ROW_KINDS + ["none"] * 4)
    raw, _ = _mutate_rows(rng, kind) if kind != "none" else (b"".join(json.dumps(r).encode() + b"\n"
                                                                      for r in _rows()), None)
    with open(data, "wb") as f:
        f.write(raw)
    base = {"models": [TINY], "data": [data], "budgets": [32, 64], "samples": 2, "chat_template": False,
            "out": os.path.join(folder, "out")}
    what = "base"
    if rng.random() < 0.7:
        key, value = rng.choice(EVAL_KEYS), rng.choice(VALUES + ["4,8", "0", "{x}", "{problem} ok"])
        base[key] = value
        what = f"{key}={value!r:.40}"
    cfg = os.path.join(folder, "eval.yaml")
    raw = yaml.safe_dump(base, allow_unicode=True).encode()
    if rng.random() < 0.1:
        raw = raw[:rng.randrange(len(raw) + 1)]
        what += " truncated"
    with open(cfg, "wb") as f:
        f.write(raw)
    argv = ["--check", "--config", cfg]
    if rng.random() < 0.2:
        flag = rng.choice(["--samples", "--budgets", "--top-p", "--limit", "--nosuch", "--model", "--data"])
        argv += [flag, str(rng.choice(VALUES))[:50]]
        what += f"; {flag} {argv[-1]!r:.30}"
        if flag in ("--model", "--data"):       # a path given on the command line: the error names it
            return argv, [data, cfg, argv[-1]], f"rows: {kind}; {what}"
    return argv, [data, cfg], f"rows: {kind}; {what}"


@pytest.fixture
def offline(monkeypatch):
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(k, "1")


def _run_cases(make, entry, n: int, tmp_path, seed: int) -> tuple[int, list[str]]:
    rng = random.Random(seed)
    failures, passed = [], 0
    for c in range(n):
        argv, files, what = make(rng, tmp_path / f"c{c}")
        t0 = time.monotonic()
        try:
            code, out, err = _in_process(entry, argv)
        except _Hang as exc:
            failures.append(f"case {c} ({what}): {exc}")
            continue
        why = _verdict(code, out, err, files)
        if why is None and time.monotonic() - t0 > CASE_TIMEOUT_S:
            why = "too slow"
        if why is not None:
            failures.append(f"case {c} ({what}): {why}: {err.strip().splitlines()[-1:] if err.strip() else ''}")
        passed += code == 0
    return passed, failures


def test_train_check_fuzzed_in_process(tmp_path, offline):
    passed, failures = _run_cases(_train_case, _train_entry, FUZZ_CASES, tmp_path, FUZZ_SEED)
    assert not failures, f"{len(failures)} of {FUZZ_CASES} cases failed (seed {FUZZ_SEED}):\n" + "\n".join(failures[:8])
    assert 0 < passed < FUZZ_CASES, passed       # both outcomes occur: the mutations are neither all fatal nor inert


def test_eval_check_fuzzed_in_process(tmp_path, offline):
    passed, failures = _run_cases(_eval_case, _eval_entry, EVAL_CASES, tmp_path, FUZZ_SEED + 1)
    assert not failures, f"{len(failures)} of {EVAL_CASES} cases failed (seed {FUZZ_SEED + 1}):\n" + \
        "\n".join(failures[:8])
    assert 0 < passed < EVAL_CASES, passed


def test_parquet_rows_fuzzed(tmp_path, offline):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rng = random.Random(FUZZ_SEED + 2)
    failures, tried = [], 0
    for c in range(40):
        kind = rng.choice([k for k in ROW_KINDS if k not in ("non_utf8", "bad_json", "bom", "blank_file")])
        _, rows = _mutate_rows(rng, kind)
        path = tmp_path / f"d{c}.parquet"
        try:
            pq.write_table(pa.Table.from_pylist([r for r in rows if r is not None] or [{"problem": None}]), path)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
        if rng.random() < 0.2:        # a file cut short
            with open(path, "r+b") as f:
                f.truncate(rng.randrange(os.path.getsize(path)))
        tried += 1
        argv = ["--check", "--data.path", str(path), "--data.format", "parquet", "--data.chat_template", "false",
                "--eval.held_out", "4", "--logging.out_dir", str(tmp_path / "run")]
        code, out, err = _in_process(_train_entry, argv)
        why = _verdict(code, out, err, [str(path)])
        if why is not None:
            failures.append(f"case {c} ({kind}): {why}\n{err[-1500:]}")
    assert tried >= 20 and not failures, "\n".join(failures[:8])


@pytest.mark.slow
def test_fuzzed_cases_as_subprocesses(tmp_path):
    """The same kinds of cases through the real command lines, a few at a time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=ROOT)
    rng = random.Random(FUZZ_SEED + 3)
    cases = []
    for c in range(SUBPROCESS_CASES):
        if c % 3 == 2:
            argv, files, what = _eval_case(rng, tmp_path / f"e{c}")
            cmd = [sys.executable, "-m", "mrt.eval", *argv]
        else:
            argv, files, what = _train_case(rng, tmp_path / f"t{c}")
            cmd = [sys.executable, os.path.join(ROOT, "train.py"), *argv]
        cases.append((cmd, files, what))
    failures = []
    for start in range(0, len(cases), 4):
        procs = [(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True), files, what) for cmd, files, what in cases[start:start + 4]]
        for p, files, what in procs:
            try:
                out, err = p.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                p.kill()
                failures.append(f"{what}: hung")
                continue
            why = _verdict(p.returncode, out, err, files)
            if why is not None:
                failures.append(f"{what}: {why}\n{err[-1500:]}")
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:8])
