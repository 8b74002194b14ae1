"""Accuracy and regret metrics of an evaluation, as docs/algorithm.md defines them; pure Python, no model needed.

- pass@1 over n samples: the mean 0/1 reward; pass@k by the unbiased estimator 1 - C(n-c, k) / C(n, k).
- maj@k: majority vote over k samples' extracted answers (ties go to the answer seen first); the vote is correct when
  the winning answer was judged correct. With `num_shuffles` > 0 it is averaged over random orders of the samples,
  otherwise it uses the first k samples.
- Normalised, cumulative and per-episode regret: mrt.regret (the one definition training and evaluation share).
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Hashable, Sequence

# One regret for training and evaluation (mrt.regret, which imports neither torch nor matplotlib); re-exported here.
from ..regret import (INTERPOLATIONS, area_under_curve, cumulative_regret, normalised_regret,  # noqa: F401
                      regret_per_episode)


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


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs)) / len(xs) if len(xs) else float("nan")
