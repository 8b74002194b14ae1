"""Token efficiency and gain ratio (mrt.eval.comparison) on hand-built curves, the numbers worked out here."""
import math

import pytest

from mrt.eval.comparison import accuracy_at, budget_to_reach, gain_ratio, token_efficiency

BUDGETS = [24, 48, 96, 192]


def test_budget_to_reach_interpolates_between_points():
    # 0.30 -> 0.50 on [48, 96]: 0.40 is reached half-way, at 72.
    assert budget_to_reach(BUDGETS, [0.1, 0.3, 0.5, 0.6], 0.4) == pytest.approx(72.0)
    # Exactly at a point: that point.
    assert budget_to_reach(BUDGETS, [0.1, 0.3, 0.5, 0.6], 0.5) == pytest.approx(96.0)
    # 0.5 -> 0.6 on [96, 192]: 0.575 at 96 + 0.75 * 96 = 168.
    assert budget_to_reach(BUDGETS, [0.1, 0.3, 0.5, 0.6], 0.575) == pytest.approx(168.0)


def test_budget_to_reach_first_point_never_and_first_crossing():
    # Already there at the first point: the smallest budget measured.
    assert budget_to_reach(BUDGETS, [0.5, 0.5, 0.6, 0.6], 0.4) == 24.0
    # Never reached: NaN.
    assert math.isnan(budget_to_reach(BUDGETS, [0.1, 0.2, 0.3, 0.35], 0.4))
    # Not monotone: the first crossing (0.2 -> 0.6 on [24, 48] reaches 0.5 at 42), not the later one.
    assert budget_to_reach(BUDGETS, [0.2, 0.6, 0.3, 0.7], 0.5) == pytest.approx(42.0)


def test_budget_to_reach_rejects_bad_curves():
    with pytest.raises(ValueError, match="increasing"):
        budget_to_reach([48, 24], [0.1, 0.2], 0.1)
    with pytest.raises(ValueError, match="as many"):
        budget_to_reach([24, 48], [0.1], 0.1)
    with pytest.raises(ValueError, match="finite"):
        budget_to_reach([24, 48], [0.1, float("nan")], 0.1)


def test_accuracy_at_reads_linearly_and_flat_past_the_ends():
    assert accuracy_at(BUDGETS, [0.1, 0.3, 0.5, 0.6], 72) == pytest.approx(0.4)
    assert accuracy_at(BUDGETS, [0.1, 0.3, 0.5, 0.6], 500) == pytest.approx(0.6)
    assert accuracy_at(BUDGETS, [0.1, 0.3, 0.5, 0.6], 0) == pytest.approx(0.1)


def test_token_efficiency_against_grpo_at_the_training_budget():
    curves = {"grpo": (BUDGETS, [0.1, 0.3, 0.5, 0.5]),     # reaches its 0.5 at T = 96
              "mrt": (BUDGETS, [0.2, 0.6, 0.7, 0.7]),      # 0.2 -> 0.6 on [24, 48]: 0.5 at 24 + 0.75 * 24 = 42
              "weak": (BUDGETS, [0.1, 0.2, 0.3, 0.4])}     # never
    eff = token_efficiency(curves, "grpo", 96)
    assert eff["grpo"]["target"] == pytest.approx(0.5)
    assert eff["grpo"]["budget"] == pytest.approx(96.0) and eff["grpo"]["ratio"] == pytest.approx(1.0)
    assert eff["mrt"]["budget"] == pytest.approx(42.0)
    assert eff["mrt"]["ratio"] == pytest.approx(96.0 / 42.0)
    assert math.isnan(eff["weak"]["budget"]) and math.isnan(eff["weak"]["ratio"])
    # GRPO's curve plateaus before T: its own budget is where it first reaches the target (0.3 -> 0.5 at 72).
    eff = token_efficiency({"grpo": (BUDGETS, [0.1, 0.3, 0.5, 0.5]), "mrt": (BUDGETS, [0.2, 0.6, 0.7, 0.7])},
                           "grpo", 192)
    assert eff["grpo"]["budget"] == pytest.approx(96.0)
    with pytest.raises(ValueError, match="reference"):
        token_efficiency({"mrt": (BUDGETS, [0.1] * 4)}, "grpo", 96)


def test_gain_ratio():
    # base 0.40, GRPO 0.45 (+0.05), MRT 0.50 (+0.10): twice the gain.
    assert gain_ratio(0.50, 0.45, 0.40) == pytest.approx(2.0)
    assert gain_ratio(0.38, 0.45, 0.40) == pytest.approx(-0.4)     # MRT below the base
    assert gain_ratio(0.50, 0.35, 0.40) == pytest.approx(-2.0)     # GRPO below the base: the sign flips
    assert math.isnan(gain_ratio(0.50, 0.40, 0.40))                # GRPO gained nothing: undefined
    assert math.isnan(gain_ratio(float("nan"), 0.45, 0.40))
