"""Small statistics of an evaluation's plots and of the benchmarks over seeds; numpy only (no scipy).

- `mean_interval(xs)`: the mean and the half-width of its 95% t-interval, `t_{0.975, n-1} * s / sqrt(n)` with the
  sample standard deviation s (n - 1 in the denominator). One value has no interval (half-width nan).
- `curve_on_grid(tokens, J, grid)`: one trace's J-vs-tokens curve read at common token counts, with the conventions
  of `mrt.eval.metrics` (the normalised regret's curve): J is 0 before the trace's first point (no answer exists with
  fewer tokens), linear between points, flat at its last J after the last point. Pass the points as
  `BudgetTrace.curve()` gives them (increasing tokens, the own answer last, so past a trace's end J is its own
  outcome); they are sorted stably, so points at equal tokens keep that order.
- `curve_band(curves)`: the mean J over problems on one token grid, with a 95% t-band of that mean. Each problem's
  samples are averaged first, so the band counts problems (independent draws), not samples of the same problem.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table up to 30, then the Cornish-Fisher expansion in 1/df (error < 1e-3 past 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_interval(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval of the mean); half-width nan for fewer than 2 values."""
    a = np.asarray(list(xs), dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_interval: no values")
    if a.size < 2:
        return float(a[0]), float("nan")
    half = t_quantile_975(a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), float(half)


def curve_on_grid(tokens: Sequence[float], J: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """J of one trace at each grid token count (module docstring's conventions)."""
    if len(tokens) != len(J) or len(tokens) == 0:
        raise ValueError(f"curve_on_grid: need as many J as tokens (>= 1), got {len(tokens)} and {len(J)}")
    order = np.argsort(np.asarray(tokens, dtype=np.float64), kind="stable")
    x = np.asarray(tokens, dtype=np.float64)[order]
    y = np.asarray(J, dtype=np.float64)[order]
    return np.interp(np.asarray(grid, dtype=np.float64), x, y, left=0.0, right=y[-1])


def common_grid(curves: Sequence[Sequence[tuple[Sequence[float], Sequence[float]]]], points: int = 48) -> np.ndarray:
    """`points` evenly spaced token counts from the smallest first point to the largest last point of any trace."""
    xs = [x for problem in curves for tokens, _ in problem for x in tokens]
    if not xs:
        raise ValueError("common_grid: no curve points")
    return np.linspace(min(xs), max(xs), points)


def curve_band(curves: Sequence[Sequence[tuple[Sequence[float], Sequence[float]]]], grid: Sequence[float] | None = None,
               points: int = 48) -> dict[str, list[float]]:
    """curves[p] = [(tokens, J) of each sample of problem p] -> {"tokens", "J", "low", "high"} on one grid: the mean
    over problems of each problem's mean J, and the 95% t-interval of that mean (low = high = J with one problem)."""
    grid = common_grid(curves, points) if grid is None else np.asarray(grid, dtype=np.float64)
    per_problem = np.stack([np.mean([curve_on_grid(t, j, grid) for t, j in problem], axis=0)
                            for problem in curves if problem])               # (problems, grid)
    mean = per_problem.mean(axis=0)
    n = per_problem.shape[0]
    half = (t_quantile_975(n - 1) * per_problem.std(axis=0, ddof=1) / math.sqrt(n)) if n > 1 else np.zeros_like(mean)
    return {"tokens": grid.tolist(), "J": mean.tolist(), "low": (mean - half).tolist(),
            "high": (mean + half).tolist(), "problems": n}


__all__ = ["common_grid", "curve_band", "curve_on_grid", "mean_interval", "t_quantile_975"]
