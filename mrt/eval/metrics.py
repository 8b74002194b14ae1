"""Accuracy and regret metrics of an evaluation, as docs/algorithm.md defines them; pure Python, no model needed.

- pass@1 over n samples: the mean 0/1 reward; pass@k by the unbiased estimator 1 - C(n-c, k) / C(n, k).
- maj@k: majority vote over k samples' extracted answers (ties go to the answer seen first); the vote is correct when
  the winning answer was judged correct. With `num_shuffles` > 0 it is averaged over random orders of the samples,
  otherwise it uses the first k samples.
- Normalised regret at a token budget C0 of one trace: `1 - (area under the J-vs-tokens curve on [0, C0]) / C0`,
  against an oracle that always succeeds. The curve has one point per measurement (tokens, J), tokens counted as
  prompt + prefix + mean answer tokens. Choices, all stated here:
    * before the first point J is 0 (no answer exists with fewer tokens than the shortest measured context);
    * between points the curve is linear (the trapezoid rule, docs/algorithm.md's default) or a step holding the
      previous J (`interpolation="step"`);
    * after the last point J stays at its last value (the trace has ended; its answer stands);
    * the area is cut at C0, interpolating the curve there.
- Cumulative regret over k episodes: `sum_j (1 - J_j)`; regret per episode is that divided by k.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Hashable, Sequence

INTERPOLATIONS = ("linear", "step")


def pass_at_1(rewards: Sequence[float]) -> float:
    """Mean reward of the samples of one or many problems (0/1 rewards give the success rate)."""
    if len(rewards) == 0:
        raise ValueError("pass_at_1: rewards is empty")
    return float(sum(rewards)) / len(rewards)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct samples out of n: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent answer is a correct one. None (no answer extracted) never wins a vote; ties go to the
    answer that appeared first; all votes None counts as wrong."""
    if len(answers) != len(correct):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(correct)} correctness flags")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return False
    best = max(counts.values())
    for a, ok in zip(answers, correct):  # first answer reaching the top count wins the tie
        if a is not None and counts[a] == best:
            return bool(ok)
    raise AssertionError("unreachable")


def maj_at_k(answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]], k: int, *,
             num_shuffles: int = 0, seed: int = 0) -> float:
    """maj@k over problems: answers[p][i], correct[p][i] for sample i of problem p (each problem has >= k samples)."""
    if len(answers) == 0:
        raise ValueError("maj_at_k: no problems")
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} problems of answers but {len(correct)} of correctness flags")
    rng = random.Random(seed)
    total = 0.0
    for p, (ans, ok) in enumerate(zip(answers, correct)):
        if not 1 <= k <= len(ans):
            raise ValueError(f"maj_at_k: k={k} but problem {p} has {len(ans)} samples")
        if num_shuffles <= 0:
            total += majority_vote(ans[:k], ok[:k])
            continue
        hits = 0
        for _ in range(num_shuffles):
            idx = rng.sample(range(len(ans)), k)
            hits += majority_vote([ans[i] for i in idx], [ok[i] for i in idx])
        total += hits / num_shuffles
    return total / len(answers)


def maj_curve(answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]], *,
              num_shuffles: int = 0, seed: int = 0) -> list[float]:
    """[maj@1, ..., maj@n] with n the smallest number of samples of any problem."""
    n = min(len(a) for a in answers)
    return [maj_at_k(answers, correct, k, num_shuffles=num_shuffles, seed=seed) for k in range(1, n + 1)]


def _check_curve(tokens: Sequence[float], J: Sequence[float]) -> None:
    if len(tokens) != len(J):
        raise ValueError(f"tokens has {len(tokens)} points but J has {len(J)}")
    if len(tokens) == 0:
        raise ValueError("the J curve has no points")
    if any(b < a for a, b in zip(tokens, tokens[1:])):
        raise ValueError(f"tokens must be non-decreasing, got {list(tokens)}")
    if tokens[0] < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens[0]}")
    if any(not 0.0 <= j <= 1.0 for j in J):
        raise ValueError(f"J values must lie in [0, 1], got {list(J)}")


def area_under_curve(tokens: Sequence[float], J: Sequence[float], budget: float, *,
                     interpolation: str = "linear") -> float:
    """Area under the J-vs-tokens curve on [0, budget] (the curve's conventions are in the module docstring)."""
    _check_curve(tokens, J)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(tokens, J), zip(tokens[1:], J[1:])):
        if x0 >= budget:
            break
        if x1 == x0:
            continue
        xe = min(x1, budget)
        if interpolation == "linear":
            ye = y0 + (y1 - y0) * (xe - x0) / (x1 - x0)  # the curve interpolated at the cut
            area += 0.5 * (y0 + ye) * (xe - x0)
        else:
            area += y0 * (xe - x0)
    if tokens[-1] < budget:  # flat at the last J after the trace's last point
        area += J[-1] * (budget - tokens[-1])
    return area


def normalised_regret(tokens: Sequence[float], J: Sequence[float], budget: float, *,
                      interpolation: str = "linear") -> float:
    """1 - area / budget: 0 for a trace that is always right, 1 for one never right before budget."""
    return 1.0 - area_under_curve(tokens, J, budget, interpolation=interpolation) / budget


def cumulative_regret(J: Sequence[float]) -> float:
    """sum_j (1 - J_j) over the episodes of one trace (docs/algorithm.md's regret against an always-right oracle)."""
    return float(sum(1.0 - j for j in J))


def regret_per_episode(J: Sequence[float]) -> float:
    """Cumulative regret divided by the number of episodes (0 for a trace without episodes)."""
    return cumulative_regret(J) / len(J) if len(J) else 0.0


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs)) / len(xs) if len(xs) else float("nan")
