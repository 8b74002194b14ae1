"""Accuracy when the answer is forced after each episode: the meta-prover at episode boundaries, in the evaluation.

While the traces are generated for budget forcing, a `MetaProver` (mrt.meta_prover, the trainer's hook) rides on the
same generate call (`episode_hook`): the training segmenter (`mrt.episodes.markers_segmenter`) finds each trace's
episode boundaries online and, at each one, forks `meta_samples` branches that share the trace's KV cache up to the
boundary, are fed the termination text and answer. No bare-prompt branches: J_{-1} = 0, as in the presets.

Per trace (`EpisodeTrace`), with k boundaries b_0 < ... < b_{k-1} (k + 1 episodes; the trace's end is no boundary):
- E_j = J at boundary b_j for j < k: the answer forced after episode j;
- E_k = the trace's end: its own 0/1 outcome if it stopped by itself, else the answer forced at the cut (the
  largest budget), which is the budget-forcing curve's last point (`BudgetTrace.J[-1]`).
So "the answer forced after episode j" for j >= k is E_k: past a trace's last episode its own outcome counts, as on
the J-vs-tokens curve.

Views over traces (pure functions on the lists E of each trace):
- `linearized_accuracy`: acc_j = mean over traces of E_{min(j, k)}, j = 0, 1, ...: does each episode add?
- `share_with_episodes`: the share of traces with at least j + 1 episodes (j boundaries or more);
- `episode_progress`: per episode index j, the progress E_j - E_{j-1} of each trace that has episode j (E_{-1} = 0,
  the presets' J_{-1}), the quantity MRT's dense bonus rewards (the paper's Fig. 16);
- `progress_summary`: per j its count, mean, quantiles and a histogram on fixed bins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from mrt.meta_prover import episode_J, score_branches

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
# Bins centred on the multiples of 0.25 in [-1, 1]: with m <= 4 forced answers a boundary, every progress value is
# such a multiple, so each bin counts one value exactly.
PROGRESS_BIN_EDGES = tuple(-1.125 + 0.25 * i for i in range(10))


@dataclass
class EpisodeTrace:
    """The episode view of one trace (request i, sample s): its boundaries, J at each, and its end's outcome."""
    request_index: int
    sample_index: int
    boundaries: list[int] = field(default_factory=list)   # completion-token positions of the episode ends forked
    J: list[float] = field(default_factory=list)          # forced-answer success at each boundary
    end_J: float = 0.0                                     # own outcome if it stopped, else forced at the cut

    @property
    def outcomes(self) -> list[float]:
        """[E_0, ..., E_k]: the answer forced after each episode, the last one the trace's end."""
        return list(self.J) + [self.end_J]

    @property
    def num_episodes(self) -> int:
        return len(self.boundaries) + 1


def episode_hook(cfg, tokenizer, termination_ids: list[int], *, max_tokens: int, max_len: int | None,
                 stop_token_ids: Sequence[int], seed: int | None):
    """The MetaProver hook that forks at the episode boundaries of cfg.episode_markers (an EvalConfig), or None when
    they are off. Its branches are tagged BranchTag.episode(b), beside budget forcing's BranchTag.budget(b)."""
    if not cfg.episode_markers:
        return None
    from mrt.episodes import markers_segmenter
    from mrt.meta_prover import MetaProver
    seg = markers_segmenter(cfg.episode_markers, cfg.episode_min_paragraphs, cfg.episode_max)
    return MetaProver(seg, tokenizer, termination_ids=termination_ids, m=cfg.meta_samples,
                      answer_max_tokens=cfg.answer_tokens, temperature=cfg.meta_temperature, top_p=cfg.meta_top_p,
                      max_tokens=max_tokens, max_len=max_len, stop_token_ids=list(stop_token_ids),
                      prompt_branches=False, seed=seed)


def score_episode_traces(outs, budget_traces, termination_text: str,
                         reward: Callable[[str, int], float]) -> list[list[EpisodeTrace]]:
    """EpisodeTrace[request][sample] from the outputs' episode branches and each trace's budget-forced end
    (budget_traces[request][sample], its last point: the own outcome, or the answer forced at the largest budget)."""
    result = []
    for r, out in enumerate(outs):
        row = []
        for comp, bt in zip(out.outputs, budget_traces[r]):
            branches = [b for b in comp.branches if b.tag.kind == "episode"]
            scores = score_branches(branches, termination_text, lambda text, r=r: reward(text, r))
            bounds, js = episode_J(scores, len(comp.token_ids))
            row.append(EpisodeTrace(r, comp.index, bounds, js, float(bt.J[-1])))
        result.append(row)
    return result


# ------------------------------------------------------------------------------------------ views over traces

def _check(outcomes: Sequence[Sequence[float]]) -> None:
    if len(outcomes) == 0:
        raise ValueError("no traces")
    if any(len(o) == 0 for o in outcomes):
        raise ValueError("every trace has at least one episode outcome (its end)")


def linearized_accuracy(outcomes: Sequence[Sequence[float]], num: int | None = None) -> list[float]:
    """[acc_0, ..., acc_{num-1}]: acc_j = mean over traces of E_{min(j, k)} (num: the most episodes of any trace)."""
    _check(outcomes)
    num = max(len(o) for o in outcomes) if num is None else num
    return [float(np.mean([o[min(j, len(o) - 1)] for o in outcomes])) for j in range(num)]


def share_with_episodes(outcomes: Sequence[Sequence[float]], num: int | None = None) -> list[float]:
    """[s_0, ..., s_{num-1}]: s_j = the share of traces with at least j + 1 episodes (s_0 = 1)."""
    _check(outcomes)
    num = max(len(o) for o in outcomes) if num is None else num
    return [float(np.mean([len(o) > j for o in outcomes])) for j in range(num)]


def episode_progress(outcomes: Sequence[Sequence[float]], j_minus_1: float = 0.0) -> list[list[float]]:
    """progress[j] = [E_j - E_{j-1} of every trace with episode j], E_{-1} = j_minus_1."""
    _check(outcomes)
    out: list[list[float]] = [[] for _ in range(max(len(o) for o in outcomes))]
    for o in outcomes:
        prev = j_minus_1
        for j, e in enumerate(o):
            out[j].append(float(e) - prev)
            prev = float(e)
    return out


def progress_summary(progress: Sequence[Sequence[float]], *, quantiles: Sequence[float] = QUANTILES,
                     bin_edges: Sequence[float] = PROGRESS_BIN_EDGES) -> list[dict[str, Any]]:
    """Per episode index j: {"episode", "n", "mean", "quantiles": {q: value}, "share_positive", "share_negative",
    "histogram": counts on bin_edges}; an index without traces has n 0 and NaN statistics."""
    rows = []
    for j, vals in enumerate(progress):
        a = np.asarray(vals, dtype=np.float64)
        if a.size:
            # The classical quantile (the smallest value whose CDF reaches q): progress takes few discrete values.
            qs = {str(q): float(np.quantile(a, q, method="inverted_cdf")) for q in quantiles}
            stats = {"mean": float(a.mean()), "quantiles": qs, "share_positive": float((a > 0).mean()),
                     "share_negative": float((a < 0).mean())}
        else:
            nan = float("nan")
            stats = {"mean": nan, "quantiles": {str(q): nan for q in quantiles}, "share_positive": nan,
                     "share_negative": nan}
        rows.append({"episode": j, "n": int(a.size), **stats,
                     "histogram": np.histogram(a, bins=np.asarray(bin_edges))[0].astype(int).tolist()})
    return rows


def episode_metrics(traces: Sequence[Sequence[EpisodeTrace]], cfg) -> dict[str, Any]:
    """The results.json section "episodes" of one model on one dataset."""
    outcomes = [t.outcomes for row in traces for t in row]
    counts = [len(o) for o in outcomes]
    return {
        "markers": list(cfg.episode_markers), "min_paragraphs": cfg.episode_min_paragraphs,
        "max_episodes": cfg.episode_max, "j_minus_1": 0.0,
        "episodes_per_trace": float(np.mean(counts)),
        "episode_count_histogram": {str(n): counts.count(n) for n in sorted(set(counts))},
        "linearized_accuracy": linearized_accuracy(outcomes),
        "share_with_episodes": share_with_episodes(outcomes),
        "progress": progress_summary(episode_progress(outcomes)),
        "progress_bin_edges": list(PROGRESS_BIN_EDGES),
        "outcomes": outcomes,   # E_0..E_k of every trace (problem-major): what the benchmarks pool over seeds
    }


__all__ = ["EpisodeTrace", "PROGRESS_BIN_EDGES", "QUANTILES", "episode_hook", "episode_metrics", "episode_progress",
           "linearized_accuracy", "progress_summary", "score_episode_traces", "share_with_episodes"]
