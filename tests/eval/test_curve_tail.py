"""The J-vs-tokens curve of a budget-forced trace past its end (mrt.eval.budget_forcing's module docstring), on
hand-built traces: the own answer is the curve's last point even where a forced answer just before the end costs
more tokens than the end, so past a trace's end J is its own outcome."""
import pytest
import torch

from mrt.eval import metrics, stats
from mrt.eval.budget_forcing import _score_trace
from mrt.eval.config import EvalConfig
from mrt.eval.evaluate import _budget_metrics
from mrt.meta_prover import BranchTag
from mrt.rollout.outputs import BranchOutput, CompletionOutput, _Text

PROMPT = 10
TERM = "\\boxed{"


def _branch(budget: int, answer: str, answer_tokens: int) -> BranchOutput:
    return BranchOutput(tag=BranchTag.budget(budget), position=PROMPT + budget, continuation_token_ids=[1, 2],
                        token_ids=[7] * answer_tokens, logprobs=torch.zeros(answer_tokens), finish_reason="length",
                        text_=_Text(value=answer))


def _trace(length: int, finish: str, own: str, forced: dict[int, list[tuple[str, int]]], budgets: list[int]):
    comp = CompletionOutput(index=0, token_ids=[5] * length, logprobs=torch.zeros(length), finish_reason=finish,
                            num_cached_tokens=0, text_=_Text(value=own),
                            branches=[_branch(b, a, n) for b, answers in forced.items() for a, n in answers])

    def reward(text: str, request: int) -> float:
        return float(text.endswith("42}"))

    tr = _score_trace(0, PROMPT, comp, budgets, TERM, reward)
    tr.place_own_answer()
    return tr


def test_trace_ending_between_budgets():
    # 20 output tokens, budgets 8 / 16 / 24 / 32: forced answers at 8 (wrong) and 16 (right; its 6 answer tokens put
    # it at x = 10 + 16 + 6 = 32, past the trace's own end at 30), then its own (right) answer at 24 and 32.
    tr = _trace(20, "stop", "so 42}", {8: [("1}", 6), ("2}", 6)], 16: [("42}", 6), ("3}", 6)]}, [8, 16, 24, 32])
    assert tr.sources == ["fork", "fork", "own", "own"]
    assert tr.J == [0.0, 0.5, 1.0, 1.0]
    tokens, J = tr.curve()
    assert tokens == [24.0, 32.0, 32.0] and J == [0.0, 0.5, 1.0]   # the own point goes after every forced point
    # Read on a grid past the end, J is the own outcome.
    assert stats.curve_on_grid(tokens, J, [40.0, 100.0]).tolist() == [1.0, 1.0]
    # Area on [0, C0 = 10 + 32]: 0 until 24, 0 -> 0.5 on [24, 32] (trapezoid: 2), then 1 on [32, 42] (10).
    assert metrics.normalised_regret(tokens, J, PROMPT + 32) == pytest.approx(1 - 12 / 42)


def test_last_forced_answer_wrong_own_answer_right():
    # 18 output tokens; the forced answer at 16 is wrong and lands at x = 10 + 16 + 8 = 34, past the end (28).
    # Sorting the points by x alone put that wrong answer last and held J at 0 to any budget.
    tr = _trace(18, "stop", "42}", {8: [("9}", 4)], 16: [("9}", 8)]}, [8, 16, 24, 64])
    tokens, J = tr.curve()
    assert tokens == [22.0, 34.0, 34.0] and J == [0.0, 0.0, 1.0]
    C0 = PROMPT + 64
    assert metrics.normalised_regret(tokens, J, C0) == pytest.approx(1 - (C0 - 34) / C0)
    # The definition this replaces: own answers at x = prompt + length (28), all points sorted by x, so the wrong
    # forced answer at 34 came last and J stayed 0 from there to C0.
    old_tokens, old_J = zip(*sorted([(22.0, 0.0), (34.0, 0.0), (28.0, 1.0), (28.0, 1.0)]))
    assert old_J[-1] == 0.0
    assert metrics.normalised_regret(old_tokens, old_J, C0) == pytest.approx(1 - 6 / C0)  # 3 up, 3 down
    assert stats.curve_on_grid(tokens, J, [C0]).tolist() == [1.0]


def test_trace_cut_at_the_largest_budget_ends_on_its_forced_answer():
    # A trace that never stopped (finish "length") has no own answer: its last forced answer is its tail.
    tr = _trace(32, "length", "no answer", {16: [("42}", 4)], 32: [("1}", 4)]}, [16, 32])
    tokens, J = tr.curve()
    assert tokens == [30.0, 46.0] and J == [1.0, 0.0]
    assert stats.curve_on_grid(tokens, J, [60.0]).tolist() == [0.0]


def test_fixed_chunk_regret_closes_with_the_own_outcome():
    # Grid points every 8 tokens up to 32; the trace stops (right) after 20 tokens: chunks [0, 8), [8, 16), [16, 20)
    # with J = (wrong, 0.5, own answer right): cumulative regret 1 + 0.5 + 0 = 1.5 over 3 episodes.
    tr = _trace(20, "stop", "so 42}", {8: [("1}", 6), ("2}", 6)], 16: [("42}", 6), ("3}", 6)]}, [8, 16, 24, 32])
    cfg = EvalConfig(budgets=[16, 32], curve_every=8)
    m = _budget_metrics([[tr]], [8, 16, 24, 32], cfg)
    assert m["cumulative_regret"] == pytest.approx(1.5)
    assert m["regret_per_episode"] == pytest.approx(0.5)
    assert m["accuracy_at_budget"] == [0.5, 1.0]
    assert m["normalised_regret_at_budget"][1] == pytest.approx(1 - 12 / 42)
    assert m["curve_grid"]["J"][-1] == 1.0
