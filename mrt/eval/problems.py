"""Evaluation datasets: problems with reference answers, and how an answer is checked.

A dataset spec is a file with a problem column and an answer column, read and checked row by row as the training
data is (mrt.data: JSONL, a JSON array, Parquet, a saved `datasets` folder), or `arithmetic[:N]` / `countdown[:N]`:
N held-out problems of a synthetic task (`mrt.tasks`, default 64). Each dataset names its verifier (the reward comes
from `mrt.rewards`: math answers through math-verify, the synthetic task's verifier) and its default termination
text; the verifier also gives the answer key of majority votes (for countdown, where many expressions are right, the
expression as written).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mrt.config import ConfigError, DataConfig
from mrt.data import TASK_FORMATS, DataError, check_row, detect_format, read_rows
from mrt.termination import R1_TERMINATION_TEXT


@dataclass
class Verifier:
    """reward(text, answer) -> 0/1; extract(text) -> a hashable answer key for majority votes, or None."""
    name: str
    reward: Callable[[str, Any], float]
    extract: Callable[[str], Any]


@dataclass
class EvalDataset:
    name: str
    problems: list[str]
    answers: list[Any]
    verifier: str
    termination_text: str


def _math_key(text: str):
    from mrt.rewards import last_boxed
    boxed = last_boxed(text)
    return None if boxed is None else boxed.replace(" ", "")


def _arithmetic_key(text: str):
    from mrt.tasks import arithmetic
    return arithmetic.extract_answer(text)


def _countdown_key(text: str):
    # Many expressions are right: the vote is on the expression as written (spaces normalised).
    from mrt.tasks import countdown
    return countdown.extract_answer(text)


# Answer keys for majority votes; the rewards themselves come from the trainer's registry (mrt.rewards).
ANSWER_KEYS: dict[str, Callable[[str], Any]] = {"math": _math_key, "arithmetic": _arithmetic_key,
                                                "countdown": _countdown_key}


def get_verifier(name: str) -> Verifier:
    from mrt.rewards import get_reward
    if name not in ANSWER_KEYS:
        raise ConfigError(f"unknown verifier {name!r}; known: {sorted(ANSWER_KEYS)}")
    return Verifier(name, get_reward(name), ANSWER_KEYS[name])


def _rows(spec: str, cfg: DataConfig, task: str | None, n: int) -> list[tuple[int, Any]]:
    """(row, object) of every row, through training's reader (mrt.data.read_rows): n held-out problems of a task, or a
    file (JSONL, a JSON array, Parquet, a saved `datasets` folder; a name of no known format is read as JSON lines)."""
    if task is not None:
        return list(read_rows(task, "task", cfg, split="heldout", seed=0, max_rows=n, key="--data"))
    fmt = "jsonl"
    if os.path.exists(spec):
        try:
            fmt = detect_format(spec)
        except DataError:
            pass
    return list(read_rows(spec, fmt, cfg, key="--data"))


def load_dataset(spec: str, *, prompt_column: str = "problem", answer_column: str = "answer",
                 limit: int | None = None) -> EvalDataset:
    """The problems of one dataset spec (a file, or `arithmetic[:N]` / `countdown[:N]`, N = 64 by default); DataError
    for a missing file, an unknown column, a malformed row (the training data's rule, mrt.data.check_row) or an empty
    dataset."""
    cfg = DataConfig(path=spec, prompt_column=prompt_column, answer_column=answer_column)
    task, _, count = spec.partition(":")
    n = 0
    if task in TASK_FORMATS:
        if count and not count.isdigit():
            raise DataError(f"dataset {spec!r}: the number of problems after ':' must be a whole number")
        n = int(count or 64)
        if n < 1:
            raise DataError(f"dataset {spec!r} is empty: ask for at least one problem")
    rows = _rows(spec, cfg, task if task in TASK_FORMATS else None, n if limit is None else min(n, limit))
    if not rows:
        raise DataError(f"dataset {spec} is empty: it has no rows")
    columns = sorted({k for _, r in rows if isinstance(r, dict) for k in r})
    for role, col in (("prompt", prompt_column), ("answer", answer_column)):
        if col not in columns:
            raise DataError(f"dataset {spec} has no {role} column {col!r}; its columns are {columns} "
                            f"(choose one with --{role}-column)")
    for row, obj in rows:
        why = check_row(obj, cfg)
        if why is not None:
            raise DataError(f"{spec}: row {row}: {why}")
    rows = rows[:limit] if limit is not None else rows
    problems, answers = [r[prompt_column] for _, r in rows], [r[answer_column] for _, r in rows]
    if task in TASK_FORMATS:      # the task's verifier and termination text
        module = importlib.import_module(f"mrt.tasks.{task}")
        return EvalDataset(task, problems, answers, task, module.TERMINATION_TEXT)
    return EvalDataset(Path(spec).stem, problems, answers, "math", R1_TERMINATION_TEXT)
