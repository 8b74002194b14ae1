import json
import threading

import pytest

from mrt.rewards import REWARDS, format_reward, get_reward, last_boxed, math_reward

from .conftest import FIXTURES


def test_registry():
    assert {"math", "arithmetic"} <= set(REWARDS)
    assert get_reward("arithmetic")("The answer is \\boxed{12} .", "12") == 1.0
    with pytest.raises(ValueError, match="reward"):
        get_reward("nope")


def test_last_boxed():
    assert last_boxed("\\boxed{1} and \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("none") is None and last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize("text, answer, want", [
    ("so \\boxed{25}", "025", 1.0),            # AIME: zero-padded strings
    ("\\boxed{27}", 27.0, 1.0),               # AMC: floats
    ("\\boxed{-1}", -1.0, 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac34", 1.0),
    ("\\boxed{3} wait \\boxed{4}", "4", 1.0),  # the last box counts
    ("\\boxed{4} wait \\boxed{3}", "4", 0.0),
    ("\\boxed{3}", "4", 0.0),
    ("4", "4", 0.0),                          # no box
    ("\\boxed{}", "4", 0.0),
])
def test_math_reward(text, answer, want):
    assert math_reward(text, answer) == want


def test_math_reward_off_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(math_reward("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}")))
    t.start()
    t.join()
    assert out == [1.0]


def test_real_answers_verify_against_themselves():
    for name in ("aime24", "amc23"):      # AIME: strings, zero-padded ("025", "073", "080"); AMC: floats (-1.0)
        with open(f"{FIXTURES}/{name}.jsonl") as f:
            rows = [json.loads(line) for line in f]
        for r in rows:
            a = r["answer"]
            shown = str(int(a)) if isinstance(a, float) else str(a).lstrip("0") or "0"
            assert math_reward(f"... so \\boxed{{{shown}}}", a) == 1.0, (name, a)
            assert math_reward("\\boxed{123456789}", a) == 0.0


def test_format_reward():
    assert format_reward("<think>a</think> \\boxed{1}") == 1.0
    assert format_reward("<think>a \\boxed{1}") == 0.0
    assert format_reward("<think>\\boxed{1}</think> no") == 0.0
    assert format_reward("plain \\boxed{2}") == 1.0 and format_reward("plain") == 0.0
