"""Rewards a user brings, named by import path: `reward: my_pkg.rewards:score` or `reward: path/to/file.py:score`.

The function is called as `fn(completion_text, answer, columns)`: the completion (or a meta-prover branch, the
termination text followed by the forced answer), the row's answer as stored, and a dict of the row's other columns
(`PromptExample.columns`). It returns a number in [0, 1]: the outcome reward, which decides `correct`, accuracy and
the meta-prover's J (the mean over a boundary's branches).

Shaping terms (`shaping: [{fn: SPEC, weight: W}]`) are called the same way, return any finite number, and add
`W * value` to the training reward only (never to `correct`, accuracy or J).

Every failure is a RewardError (a ConfigError, so a user error: the entry point prints one `error: reward: ...` line
and exits with 2): the module or file cannot be imported, the function is missing or does not take three arguments,
or a call raises, returns something that is not a number, or (the outcome reward) a value outside [0, 1]. The
message names the function and, for a call, the row (0-based, in the data source).

A module is looked up on sys.path, then in the working directory. A file path is relative to the working directory
(`mrt:` paths are inside the mrt package); the file is loaded once per process under a private module name, so two
files both called `reward.py` do not collide.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
from typing import Any, Callable

from .errors import ConfigError
from .paths import resolve_path


class RewardError(ConfigError):
    """A user's reward function that cannot be loaded or misbehaves; the message starts with the config key."""


def _split(spec: str, key: str) -> tuple[str, str]:
    where, sep, func = spec.rpartition(":")
    if not sep or not where.strip() or not func.strip():
        raise RewardError(f"{key}: {spec!r} is not MODULE:FUNCTION or PATH.py:FUNCTION")
    return where.strip(), func.strip()


def _is_file(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where or where.startswith("mrt:")


def _load_file(path: str, spec: str, key: str):
    full = os.path.abspath(resolve_path(path))
    if not os.path.isfile(full):
        raise RewardError(f"{key}: {spec}: no such file {full}")
    # A private name per file: the same file loads once, two files of the same name do not collide.
    name = "mrt_user_reward_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    mod_spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 (the user's module failed to import: one line)
        del sys.modules[name]
        raise RewardError(f"{key}: {spec}: importing {full} raised {type(exc).__name__}: {_short(exc)}") from None
    return module


def _load_module(where: str, spec: str, key: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())      # last: a package in the working directory, as `python -m` would find it
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        # The module itself (or a parent package) is missing, not something it imports.
        if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
            raise RewardError(f"{key}: {spec}: no module named {exc.name!r} (is it installed, or on PYTHONPATH?)") \
                from None
        raise RewardError(f"{key}: {spec}: importing {where} raised ModuleNotFoundError: {_short(exc)}") from None
    except Exception as exc:  # noqa: BLE001
        raise RewardError(f"{key}: {spec}: importing {where} raised {type(exc).__name__}: {_short(exc)}") from None


def load_callable(spec: str, key: str = "reward") -> Callable:
    """The function named by spec (`module:function` or `file.py:function`), checked to take (completion, answer,
    columns)."""
    where, func = _split(spec, key)
    module = _load_file(where, spec, key) if _is_file(where) else _load_module(where, spec, key)
    fn = module
    for part in func.split("."):           # `module:Class.method` or a nested attribute
        if not hasattr(fn, part):
            have = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise RewardError(f"{key}: {spec}: {where} has no function {func!r} (its functions: {have})")
        fn = getattr(fn, part)
    if not callable(fn):
        raise RewardError(f"{key}: {spec}: {func} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind("completion", "answer", {})
    except TypeError:
        raise RewardError(f"{key}: {spec}: {func}{inspect.signature(fn)} must take three arguments "
                          "(completion_text, answer, columns)") from None
    except ValueError:       # a builtin without a signature: trusted
        pass
    return fn


def _short(exc: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."


def _row_of(example) -> str:
    row = getattr(example, "row", None)
    return "a call without a row" if row is None else f"row {row}"


class UserFunction:
    """A loaded user function with the checks of its return value; called as f(text, example_or_answer).

    The second argument is a PromptExample (the trainer passes the row: its answer, columns and row number reach the
    function and its error messages) or a bare answer (any caller of the built-in `fn(text, answer)` form)."""

    def __init__(self, spec: str, key: str, *, unit_range: bool):
        self.spec, self.key, self.unit_range = spec, key, unit_range
        self.fn = load_callable(spec, key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __call__(self, text: str, example: Any) -> float:
        if hasattr(example, "columns") and hasattr(example, "answer"):
            answer, columns = example.answer, dict(example.columns)
        else:
            answer, columns, example = example, {}, None
        try:
            value = self.fn(text, answer, columns)
        except RewardError:
            raise
        except Exception as exc:  # noqa: BLE001 (the user's function failed: one line naming it and the row)
            raise RewardError(f"{self.key}: {self.spec} raised {type(exc).__name__} on {_row_of(example)}: "
                              f"{_short(exc)}") from None
        return self._check(value, example)

    def _check(self, value, example) -> float:
        if not isinstance(value, numbers.Real) and hasattr(value, "item") and tuple(getattr(value, "shape", (0,))) \
                == ():
            value = value.item()        # a 0-d tensor or array
        if not isinstance(value, numbers.Real):
            raise RewardError(f"{self.key}: {self.spec} returned {type(value).__name__} {_short(repr(value), 60)} on "
                              f"{_row_of(example)}; it must return a number")
        v = float(value)
        if not math.isfinite(v) or (self.unit_range and not 0.0 <= v <= 1.0):
            want = "a number in [0, 1]" if self.unit_range else "a finite number"
            raise RewardError(f"{self.key}: {self.spec} returned {v} on {_row_of(example)}; it must return {want}")
        return v


class CustomReward(UserFunction):
    """The outcome reward named by `reward: SPEC`: a number in [0, 1]."""

    def __init__(self, spec: str, key: str = "reward"):
        super().__init__(spec, key, unit_range=True)


class Shaping:
    """The weighted shaping terms of `shaping:`; `values(texts_by_example)` -> the bonus of each completion."""

    def __init__(self, terms: list):
        self.terms = [(UserFunction(t.fn, f"shaping[{i}].fn", unit_range=False), float(t.weight))
                      for i, t in enumerate(terms)]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def bonus(self, text: str, example) -> float:
        return sum(w * f(text, example) for f, w in self.terms)


def reward_answers(reward_fn, examples: list) -> list:
    """What build_batch hands the reward as each prompt's answer: the example itself for a user's reward (its
    columns and row reach the function), the bare answer for a built-in one."""
    return list(examples) if isinstance(reward_fn, UserFunction) else [e.answer for e in examples]


def shaping_bonus(outputs, examples: list, shaping: Shaping) -> list[float]:
    """The shaping bonus of every completion of outputs (one RequestOutput per example, G completions each), in the
    order build_batch packs them."""
    return [shaping.bonus(c.text, e) for req, e in zip(outputs, examples) for c in req.outputs]
