"""mrt.eval.stats against hand-computed values: t-intervals, curves on a common grid, the band over problems."""
import math

import numpy as np
import pytest

from mrt.eval.stats import common_grid, curve_band, curve_on_grid, mean_interval, t_quantile_975


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303 and t_quantile_975(30) == 2.042
    # Past the table the expansion continues it smoothly toward the normal quantile 1.96.
    assert t_quantile_975(31) == pytest.approx(2.040, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_interval():
    # [1, 2, 3]: mean 2, s = 1, half-width t_{0.975,2} * 1 / sqrt(3) = 4.303 / 1.7320508.
    m, h = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    m, h = mean_interval([0.5])
    assert m == 0.5 and math.isnan(h)
    assert mean_interval([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))
    with pytest.raises(ValueError):
        mean_interval([])


def test_curve_on_grid_conventions():
    # Points out of order (a forced answer costing more tokens than the trace's own end) are sorted first:
    # (10, 0.2), (20, 0.6), (30, 1.0). 0 before the first point, linear between, flat after the last.
    got = curve_on_grid([10, 30, 20], [0.2, 1.0, 0.6], [5, 10, 15, 25, 30, 40])
    assert got.tolist() == pytest.approx([0.0, 0.2, 0.4, 0.8, 1.0, 1.0])
    with pytest.raises(ValueError):
        curve_on_grid([1, 2], [0.5], [1])


def test_curve_band_means_problems_not_samples():
    # Problem 0 has two samples: on grid [10, 20] they read [0, 1] and [1, 1] -> problem mean [0.5, 1].
    # Problem 1 has one sample reading [0, 0]. Mean over the two problems: [0.25, 0.5].
    # Band: s over problems at x=10: values 0.5, 0 -> s = 0.3535534; half = 12.706 * s / sqrt(2) = 3.1765.
    curves = [[([10, 20], [0.0, 1.0]), ([10, 20], [1.0, 1.0])], [([10, 20], [0.0, 0.0])]]
    band = curve_band(curves, grid=[10, 20])
    assert band["tokens"] == [10.0, 20.0] and band["problems"] == 2
    assert band["J"] == pytest.approx([0.25, 0.5])
    half = 12.706 * np.std([0.5, 0.0], ddof=1) / math.sqrt(2)
    assert band["low"] == pytest.approx([0.25 - half, 0.5 - 12.706 * np.std([1.0, 0.0], ddof=1) / math.sqrt(2)])
    assert band["high"][0] == pytest.approx(0.25 + half)
    # The default grid spans the smallest first point to the largest last point, and rises.
    grid = common_grid([[([12, 30], [0, 1])], [([8, 40], [0, 1])]], points=5)
    assert grid.tolist() == [8.0, 16.0, 24.0, 32.0, 40.0]
    assert np.all(np.diff(curve_band(curves)["tokens"]) > 0)
