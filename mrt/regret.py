"""Regret against an always-right oracle (docs/algorithm.md), the one definition training and evaluation share.

- Cumulative regret of one trace over its k episodes: `sum_j (1 - J_j)`, the last episode's J being the trace's own
  outcome (so a right trace without corrections has regret 0, a wrong one at least 1); per episode: that over k.
- Normalised regret of one trace at a token budget C0: `1 - (area under the J-vs-tokens curve on [0, C0]) / C0`.
  The curve has one point per measurement (tokens, J). Choices, all stated here:
    * before the first point J is 0 (no answer exists with fewer tokens than the shortest measured context);
    * between points the curve is linear (the trapezoid rule, the default) or a step holding the previous J
      (`interpolation="step"`);
    * after the last point J stays at its last value (the trace has ended; its answer stands);
    * the area is cut at C0, interpolating the curve there.
  Unlike the cumulative regret (which a trace lowers by having fewer episodes) it is an area per token, fair across
  lengths.

Pure Python plus the tensor methods of a packed batch (`batch_regret`, `batch_normalised_regret`): importing it loads
neither torch nor anything of mrt, so mrt.trainer and mrt.eval both import it without a circle.
"""
from __future__ import annotations

from typing import Sequence

INTERPOLATIONS = ("linear", "step")


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
    """sum_j (1 - J_j) over the episodes of one trace (the regret against an always-right oracle)."""
    return float(sum(1.0 - j for j in J))


def regret_per_episode(J: Sequence[float]) -> float:
    """Cumulative regret divided by the number of episodes (0 for a trace without episodes)."""
    return cumulative_regret(J) / len(J) if len(J) else 0.0


def batch_regret(batch):
    """The cumulative regret summed over a packed batch's traces, a float64 0-d tensor on the batch's device (no host
    read): each trace's episodes (J at its boundaries, (E,)) and its final episode, whose J is its own outcome
    (correct (B,)), so sum_b cumulative_regret(J_b + [correct_b]) = sum_e (1 - J_e) + B - sum_b correct_b."""
    return (1.0 - batch.J).double().sum() + len(batch) - batch.correct.double().sum()


def batch_normalised_regret(batch, *, extra_tokens: int, max_new_tokens: int) -> list[float]:
    """Normalised regret of each trace of a packed batch at the run's budget C0 = prompt + max_new_tokens +
    extra_tokens (the meta-prover's termination text and answer budget).

    The J-vs-tokens curve: J at each boundary b (x = prompt + b + extra_tokens), then the trace's own outcome at its
    end. Python over the traces: the batch's tensors are read once, on the host."""
    P, L, eo = batch.prompt_lens.tolist(), batch.completion_lens.tolist(), batch.episode_offsets.tolist()
    ends, J, correct = batch.episode_ends.tolist(), batch.J.tolist(), batch.correct.tolist()
    out = []
    for b in range(len(batch)):
        xs = [P[b] + e + extra_tokens for e in ends[eo[b]:eo[b + 1]]] + [P[b] + L[b] + extra_tokens]
        js = J[eo[b]:eo[b + 1]] + [correct[b]]
        out.append(normalised_regret(xs, js, P[b] + max_new_tokens + extra_tokens))
    return out
