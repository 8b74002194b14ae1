"""Comparing RL methods on evaluation results: token efficiency and gain ratio (the paper's MRT-vs-GRPO numbers).

Pure functions on numbers, no model:
- `budget_to_reach(budgets, accuracy, target)`: the smallest budget at which an accuracy-vs-budget curve reaches
  `target`, reading the curve linearly between its measured points. A curve already at the target at its first point
  gives that point (the smallest budget measured: an upper bound), one that never reaches it NaN. Not monotone curves
  give the first crossing.
- `accuracy_at(budgets, accuracy, budget)`: the curve read at one budget (linear between points, flat past the ends).
- `token_efficiency(curves, reference, train_budget)`: the paper's "tokens for the same accuracy": the target is the
  reference's (GRPO's) accuracy at the training budget; for each method the budget at which it reaches the target and
  the reference's budget over that one (> 1: the method needs fewer tokens; the paper reports 1.2-1.6x).
- `gain_ratio(method, reference, base)`: (method - base) / (reference - base), the paper's "about 2x the gain of
  outcome-reward RL over the base model"; NaN when the reference gained nothing (the ratio is undefined).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def _curve(budgets: Sequence[float], accuracy: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(budgets, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"need as many accuracies as budgets (>= 1), got {x.size} budgets and {y.size} accuracies")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"budgets must be strictly increasing, got {list(budgets)}")
    if np.any(~np.isfinite(y)):
        raise ValueError(f"accuracies must be finite, got {list(accuracy)}")
    return x, y


def accuracy_at(budgets: Sequence[float], accuracy: Sequence[float], budget: float) -> float:
    """The curve at `budget`: linear between measured points, flat before the first and after the last."""
    x, y = _curve(budgets, accuracy)
    return float(np.interp(budget, x, y))


def budget_to_reach(budgets: Sequence[float], accuracy: Sequence[float], target: float) -> float:
    """Smallest budget at which the piecewise-linear curve reaches target (module docstring); NaN if it never does."""
    x, y = _curve(budgets, accuracy)
    if y[0] >= target:
        return float(x[0])
    for i in range(1, x.size):
        if y[i] >= target:            # y[i-1] < target <= y[i]: the crossing lies in (x[i-1], x[i]]
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return float("nan")


def token_efficiency(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], reference: str,
                     train_budget: float) -> dict[str, dict[str, float]]:
    """curves[method] = (budgets, accuracy) -> {method: {"target", "budget", "ratio"}}: the reference's accuracy at
    train_budget, the budget at which the method reaches it, and reference budget / method budget (NaN where a method
    never reaches the target)."""
    if reference not in curves:
        raise ValueError(f"the reference {reference!r} has no curve; curves: {sorted(curves)}")
    target = accuracy_at(*curves[reference], train_budget)
    ref_budget = budget_to_reach(*curves[reference], target)
    out = {}
    for name, (b, a) in curves.items():
        t = budget_to_reach(b, a, target)
        out[name] = {"target": target, "budget": t, "ratio": ref_budget / t if t == t and t > 0 else float("nan")}
    return out


def gain_ratio(method: float, reference: float, base: float) -> float:
    """(method - base) / (reference - base); NaN when reference == base."""
    den = reference - base
    if den == 0 or not all(map(math.isfinite, (method, reference, base))):
        return float("nan")
    return (method - base) / den


__all__ = ["accuracy_at", "budget_to_reach", "gain_ratio", "token_efficiency"]
