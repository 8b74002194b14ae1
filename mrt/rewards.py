"""Outcome rewards: a registry `name -> fn(completion_text, answer) -> float`.

- `math`: 1.0 if the last `\\boxed{...}` of the completion verifies against the answer with `math-verify`, else 0.0.
  Answers may be strings (zero-padded AIME answers like "025" are equal to 25) or numbers (AMC's 27.0). math-verify's
  own timeouts use `signal.alarm`, which only works on the main thread, so they are switched off
  (`parsing_timeout=None`, `timeout_seconds=None`): rewards may be computed in worker threads.
- `arithmetic`: the synthetic task's verifier (`mrt.tasks.arithmetic.verify`).
- `countdown`: the search task's verifier (`mrt.tasks.countdown.verify`; the answer is the problem's text).
- your own, by import path (`reward: my_pkg.rewards:score`, `reward: path/to/file.py:score`): `mrt.reward_fn`.
- `format_reward(text)`: 1.0 if the completion has exactly one final `\\boxed{}` after a closed thinking block (when
  a `<think>` was opened), else 0.0; the trainer adds `format_reward` (config weight) times it.
"""
from __future__ import annotations

import logging
import re
from typing import Callable

from .tasks import arithmetic, countdown

RewardFn = Callable[[str, object], float]


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (balanced braces), or None."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k]
    return None


def _answer_text(answer) -> str:
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))          # AMC answers are floats: 27.0 -> "27"
    return str(answer).strip()


def math_reward(completion_text: str, answer) -> float:
    from math_verify import parse, verify

    # math-verify warns on every call that its timeouts are off; they are off on purpose (see the docstring).
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    boxed = last_boxed(completion_text)
    if boxed is None or not boxed.strip():
        return 0.0
    want = _answer_text(answer)
    try:
        gold = parse(f"${want}$", parsing_timeout=None)
        pred = parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=None)
        if not gold or not pred:
            return 0.0
        return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0
    except Exception:  # math-verify raises on exotic LaTeX; an unparsable answer is simply wrong
        return 0.0


def arithmetic_reward(completion_text: str, answer) -> float:
    return arithmetic.verify(completion_text, answer)


def countdown_reward(completion_text: str, answer) -> float:
    return countdown.verify(completion_text, answer)


_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def format_reward(completion_text: str) -> float:
    """1.0 for a well-formed answer: a closed <think> block if one opened, then a \\boxed{} after it."""
    if "<think>" in completion_text or "</think>" in completion_text:
        if "</think>" not in completion_text:
            return 0.0
        after = completion_text.rsplit("</think>", 1)[1]
        return 1.0 if last_boxed(after) is not None else 0.0
    return 1.0 if last_boxed(completion_text) is not None else 0.0


REWARDS: dict[str, RewardFn] = {
    "math": math_reward,
    "arithmetic": arithmetic_reward,
    "countdown": countdown_reward,
}


def get_reward(name: str) -> RewardFn:
    """A built-in reward by name, or a user's by import path (`module:function`, `file.py:function`: a
    `mrt.reward_fn.CustomReward`, loaded and checked here, so a missing module or function fails at once)."""
    if name not in REWARDS and ":" in name:
        from .reward_fn import CustomReward
        return CustomReward(name)
    if name not in REWARDS:
        raise ValueError(f"reward: unknown reward {name!r} (known: {sorted(REWARDS)})")
    return REWARDS[name]
