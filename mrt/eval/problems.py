"""Evaluation datasets: problems with reference answers, and how an answer is checked.

A dataset spec is a JSONL / JSON file (a list of objects) with a problem column and an answer column, or
`arithmetic[:N]` / `countdown[:N]`: N held-out problems of a synthetic task (`mrt.tasks`, default 64). Each dataset
names its verifier (the reward comes from `mrt.rewards`: math answers through math-verify, the synthetic task's
verifier) and its default termination text; the verifier also gives the answer key of majority votes (for countdown,
where many expressions are right, the expression as written).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import R1_TERMINATION_TEXT


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
        raise ValueError(f"unknown verifier {name!r}; known: {sorted(ANSWER_KEYS)}")
    return Verifier(name, get_reward(name), ANSWER_KEYS[name])


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise ValueError(f"dataset file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte at offset {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"dataset file {path} cannot be read ({exc.strerror or exc})") from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
    else:
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i + 1}: not a JSON line ({exc})") from None
    if any(not isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: every row must be a JSON object")
    return rows


def load_dataset(spec: str, *, prompt_column: str = "problem", answer_column: str = "answer",
                 limit: int | None = None) -> EvalDataset:
    """The problems of one dataset spec; ValueError for a missing file, an unknown column or an empty dataset."""
    task, _, count = spec.partition(":")
    if task in ("arithmetic", "countdown"):      # a synthetic task's held-out split (mrt.tasks), 64 problems by default
        import importlib
        module = importlib.import_module(f"mrt.tasks.{task}")
        if count and not count.isdigit():
            raise ValueError(f"dataset {spec!r}: the number of problems after ':' must be a whole number")
        n = int(count or 64)
        if n < 1:
            raise ValueError(f"dataset {spec!r} is empty: ask for at least one problem")
        probs = module.generate_problems(n if limit is None else min(n, limit), seed=0, split="heldout")
        return EvalDataset(task, [p.text for p in probs], [p.answer for p in probs], task, module.TERMINATION_TEXT)
    path = Path(spec)
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"dataset {path} is empty: it has no rows")
    columns = sorted({k for r in rows for k in r})
    for role, col in (("prompt", prompt_column), ("answer", answer_column)):
        if col not in columns:
            raise ValueError(f"dataset {path} has no {role} column {col!r}; its columns are {columns} "
                             f"(choose one with --{role}-column)")
    missing = [i for i, r in enumerate(rows) if prompt_column not in r or answer_column not in r]
    if missing:
        raise ValueError(f"dataset {path}: rows {missing[:5]} lack {prompt_column!r} or {answer_column!r}")
    empty = [i for i, r in enumerate(rows) if r[prompt_column] is None or not str(r[prompt_column]).strip()]
    if empty:
        raise ValueError(f"dataset {path}: rows {empty[:5]} have an empty {prompt_column!r}")
    rows = rows[:limit] if limit is not None else rows
    return EvalDataset(path.stem, [str(r[prompt_column]) for r in rows], [r[answer_column] for r in rows], "math",
                       R1_TERMINATION_TEXT)
