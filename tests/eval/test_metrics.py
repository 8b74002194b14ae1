"""Metrics against values computed by hand, and the regret against a fine numerical integral of random curves."""
import numpy as np
import pytest

from mrt.eval import metrics


# A hand-built J curve: (100, 0.2), (200, 0.6), (400, 1.0).
TOKENS = [100, 200, 400]
J = [0.2, 0.6, 1.0]


@pytest.mark.parametrize("budget, interpolation, expected", [
    # J = 0 on [0, 100); trapezoid (0.2 + 0.6) / 2 * 100 = 40; J(300) = 0.8: (0.6 + 0.8) / 2 * 100 = 70.
    (300, "linear", 1 - 110 / 300),
    # step: 0.2 * 100 + 0.6 * 100 = 80.
    (300, "step", 1 - 80 / 300),
    # 40 + (0.6 + 1.0) / 2 * 200 = 160, then flat at 1.0 for 100 tokens: 300.
    (500, "linear", 1 - 300 / 500),
    # 20 + 0.6 * 200 + 1.0 * 100 = 240.
    (500, "step", 1 - 240 / 500),
    # before the first point nothing is answered yet.
    (50, "linear", 1.0),
    # J(150) = 0.4: (0.2 + 0.4) / 2 * 50 = 15.
    (150, "linear", 1 - 15 / 150),
    (400, "linear", 1 - 200 / 400),
])
def test_normalised_regret_by_hand(budget, interpolation, expected):
    got = metrics.normalised_regret(TOKENS, J, budget, interpolation=interpolation)
    assert got == pytest.approx(expected, abs=1e-12), (budget, interpolation, got, expected)


def test_always_right_and_never_right():
    assert metrics.normalised_regret([0], [1.0], 1000) == pytest.approx(0.0)
    assert metrics.normalised_regret([10, 20], [0.0, 0.0], 1000) == pytest.approx(1.0)


def _integral(tokens, J, budget, interpolation):
    """The same curve integrated on a fine grid (midpoint rule) as an independent check."""
    x = (np.arange(200_000) + 0.5) * budget / 200_000
    if interpolation == "linear":
        y = np.interp(x, tokens, J)
    else:
        idx = np.searchsorted(tokens, x, side="right") - 1
        y = np.asarray(J)[np.clip(idx, 0, None)]
    y[x < tokens[0]] = 0.0
    return float(y.mean() * budget)


@pytest.mark.parametrize("interpolation", metrics.INTERPOLATIONS)
def test_regret_matches_numerical_integral(seed, interpolation):
    rng = np.random.default_rng(seed)
    for _ in range(5):
        k = int(rng.integers(1, 7))
        tokens = np.sort(rng.integers(1, 1000, size=k)).astype(float).tolist()
        J = rng.random(k).tolist()
        budget = float(rng.integers(1, 1500))
        got = metrics.area_under_curve(tokens, J, budget, interpolation=interpolation)
        want = _integral(np.asarray(tokens), J, budget, interpolation)
        assert got == pytest.approx(want, rel=1e-3, abs=1e-2 * budget / 1000), (tokens, J, budget, got, want)


def test_bad_curves_are_clear_errors():
    with pytest.raises(ValueError, match="non-decreasing"):
        metrics.normalised_regret([200, 100], [0.1, 0.2], 300)
    with pytest.raises(ValueError, match="points"):
        metrics.normalised_regret([100], [0.1, 0.2], 300)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.normalised_regret([100], [1.5], 300)
    with pytest.raises(ValueError, match="budget"):
        metrics.normalised_regret([100], [0.5], 0)
    with pytest.raises(ValueError, match="interpolation"):
        metrics.normalised_regret([100], [0.5], 10, interpolation="cubic")


def test_cumulative_regret_by_hand():
    assert metrics.cumulative_regret([0.25, 0.5, 1.0]) == pytest.approx(0.75 + 0.5 + 0.0)
    assert metrics.regret_per_episode([0.25, 0.5, 1.0]) == pytest.approx(1.25 / 3)
    assert metrics.regret_per_episode([]) == 0.0


def test_maj_at_k_by_hand():
    answers = [["3", "4", "4", "5"], [None, "7", "8", "8"]]
    correct = [[False, True, True, False], [False, False, True, True]]
    # problem 0: "3" wrong; tie "3"/"4" -> "3" (first) wrong; "4" x2 right; right.
    # problem 1: no answer -> wrong; "7" wrong; tie "7"/"8" -> "7" wrong; "8" x2 right.
    assert metrics.maj_curve(answers, correct) == [0.0, 0.0, 0.5, 1.0]
    # averaged over orders, maj@4 does not depend on the order; maj@1 equals pass@1 in expectation.
    assert metrics.maj_at_k(answers, correct, 4, num_shuffles=7) == 1.0
    with pytest.raises(ValueError, match="k=5"):
        metrics.maj_at_k(answers, correct, 5)


def test_pass_at_k_by_hand():
    assert metrics.pass_at_1([1, 0, 0, 1]) == 0.5
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert metrics.pass_at_k(4, 3, 2) == 1.0
    assert metrics.pass_at_k(4, 0, 4) == 0.0
    with pytest.raises(ValueError):
        metrics.pass_at_1([])
