"""Accuracy at token budgets by budget forcing, one generation per trace.

Each trace is generated once, up to the largest budget. A generate hook watches it: as soon as its output reaches a
budget b, it asks the engine for `m` meta-prover branches at position `prompt + b` (ForkRequest, tagged
`BranchTag.budget(b)`): each branch shares the trace's KV blocks up to that point, is fed the termination text and
samples a short answer. So only the termination text and the answers are computed per budget, never the prefix again.
J_b of the trace is the mean reward of its branches' answers, scored as in training (`mrt.meta_prover.score_branches`:
the termination text is part of the checked text, it may open the answer, e.g. `\\boxed{`).

A trace that stopped by itself within b tokens answers with its own output at every budget >= its length (the model
finished thinking; its answer stands). A budget that the hook could not fork (the trace reached it on its very last
step) is answered by a fresh generation from the cut prefix + termination text, which is the same computation
(the prefix comes from the cache); the count of such fallbacks is reported.

The J-vs-tokens curve of one trace (what `BudgetTrace.curve`, the normalised regret and the plots read):
- a forced point for each budget b the trace ran past: x = prompt + b + its branches' mean answer tokens
  (docs/algorithm.md: tokens counted as prompt + prefix + answer), y = J_b;
- then its own answer, if it stopped by itself within the largest budget: x = max(prompt + length, the x of every
  forced point), y = its own 0/1 outcome. Past a trace's end J is its own outcome: the model finished thinking and
  its answer stands. The own point goes after every forced point even where a forced answer at a budget just before
  the end, with its answer tokens added, would cost more tokens than the end itself; otherwise that forced answer
  (often cut mid-line) would be the curve's last point and hold its J flat to any budget;
- before the first point J is 0, between points linear, after the last point flat (`mrt.eval.metrics`).
A trace cut at the largest budget has no own point: its last forced answer is its curve's tail.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mrt.meta_prover import BranchTag, score_answers, score_branches


@dataclass
class BudgetTrace:
    """Budget-forced results of one trace (request i, sample s)."""
    request_index: int
    sample_index: int
    num_prompt_tokens: int
    num_output_tokens: int
    budgets: list[int]
    J: list[float] = field(default_factory=list)           # meta-prover success at each budget
    tokens: list[float] = field(default_factory=list)      # x of the J curve at each budget
    answers: list[list[str]] = field(default_factory=list)  # the checked texts at each budget
    sources: list[str] = field(default_factory=list)       # "fork" | "own" | "fallback" at each budget

    def add(self, J: float, tokens: float, answers: list[str], source: str) -> None:
        """The next budget's point."""
        self.J.append(J)
        self.tokens.append(tokens)
        self.answers.append(answers)
        self.sources.append(source)

    def place_own_answer(self) -> None:
        """Put the own-answer points at x = max(prompt + length, every forced point's x) (module docstring); call once
        every forced point has its tokens (after any fallback)."""
        forced = [x for x, src in zip(self.tokens, self.sources) if src != "own"]
        end = max([float(self.num_prompt_tokens + self.num_output_tokens)] + forced)
        self.tokens = [end if src == "own" else x for x, src in zip(self.tokens, self.sources)]

    def curve(self) -> tuple[list[float], list[float]]:
        """(tokens, J) of the trace's J-vs-tokens curve in increasing tokens; the own answer, if any, last."""
        forced = sorted(((x, j) for x, j, src in zip(self.tokens, self.J, self.sources) if src != "own"),
                        key=lambda p: p[0])
        own = [(x, j) for x, j, src in zip(self.tokens, self.J, self.sources) if src == "own"][:1]
        points = forced + own
        return [x for x, _ in points], [j for _, j in points]


class BudgetHook:
    """The generate hook: at each budget reached by a running trace, fork the meta-prover from that point."""

    def __init__(self, budgets: Sequence[int], termination_ids: list[int], meta_params, *,
                 stop_token_ids: Sequence[int] = ()):
        from mrt.rollout import ForkRequest
        self._fork = ForkRequest
        self.budgets = sorted(budgets)
        self.termination_ids = list(termination_ids)
        self.meta_params = meta_params
        self.stop_token_ids = set(stop_token_ids)
        self.next_budget: dict[tuple[int, int], int] = {}  # (request, sample) -> index of the next budget to fork
        self.num_forks = 0

    def __call__(self, seq) -> list | None:
        """seq: a SequenceView; read in O(1) (its lengths and the token before each budget), never copied."""
        key = (seq.request_index, seq.sample_index)
        i = self.next_budget.get(key, 0)
        n_out = seq.num_output_tokens
        reqs = []
        while i < len(self.budgets) and self.budgets[i] <= n_out:
            b = self.budgets[i]
            # A prefix that ends with the trace's own stop token is a finished trace: it answers for itself.
            if not seq.output_token(b - 1) in self.stop_token_ids:
                reqs.append(self._fork(self.termination_ids, self.meta_params, tag=BranchTag.budget(b),
                                       position=seq.num_prompt_tokens + b))
            i += 1
        self.next_budget[key] = i
        self.num_forks += len(reqs)
        return reqs or None

    def wake_at(self, seq) -> int:
        """For the engine (Engine._call_hook): the trace need not be shown again before its next budget (after the
        last budget: only at its end, where the hook has nothing to do)."""
        i = self.next_budget.get((seq.request_index, seq.sample_index), 0)
        return self.budgets[i] if i < len(self.budgets) else sys.maxsize


def generate_with_budgets(engine, prompts: list[list[int]], trace_params, budgets: Sequence[int],
                          termination_ids: list[int], termination_text: str, meta_params,
                          reward: Callable[[str, int], float], *, stop_token_ids: Sequence[int] = (),
                          use_tqdm: bool = False, extra_hooks: Sequence[Callable] = ()
                          ) -> tuple[list[Any], list[list[BudgetTrace]], dict]:
    """Generate `trace_params.n` traces per prompt once, forking the meta-prover at every budget.

    trace_params: one SamplingParams, or one per prompt (give each prompt its own seed); max_tokens must be
    >= max(budgets). reward(text, request_index) -> 0/1 checks an answer of that
    prompt. extra_hooks: more generate hooks whose forks ride on the same traces (e.g. the meta-prover at episode
    boundaries, mrt.eval.episode_forcing); their branches come back on the outputs beside the budget branches.
    Returns the engine's outputs, BudgetTrace[request][sample], and stats (forks, fallbacks, and engine: the
    GenerationStats of its generate calls).
    """
    budgets = sorted(budgets)
    shortest = min(p.max_tokens for p in (trace_params if isinstance(trace_params, list) else [trace_params]))
    if shortest < budgets[-1]:
        raise ValueError(f"trace max_tokens ({shortest}) is below the largest budget ({budgets[-1]})")
    hook = BudgetHook(budgets, termination_ids, meta_params, stop_token_ids=stop_token_ids)
    gen = engine.generate(prompts, trace_params, hook=_chain(hook, *extra_hooks), use_tqdm=use_tqdm)
    outs, engine_stats = gen.outputs, gen.stats

    results, missing = _score_traces(outs, budgets, termination_text, reward)
    if missing:
        engine_stats = engine_stats + _answer_fallbacks(engine, outs, missing, budgets, termination_ids,
                                                        termination_text, meta_params, reward)
    for tr in (tr for row in results for tr in row):
        tr.place_own_answer()
    stats = {"forks": hook.num_forks, "fallbacks": len(missing), "engine": engine_stats}
    return outs, results, stats


def _chain(*hooks):
    """One generate hook that asks each hook in turn and forks everything they ask."""
    if len(hooks) == 1:
        return hooks[0]
    return _Chain(hooks)


class _Chain:
    """Hooks asked in turn. It needs a trace shown as soon as any of them does: wake_at is the earliest of theirs
    (None, every step, when one of them has no wake_at or says None)."""

    def __init__(self, hooks):
        self.hooks = list(hooks)

    def __call__(self, view):
        forks = [f for h in self.hooks for f in (h(view) or ())]
        return forks or None

    def wake_at(self, view) -> int | None:
        wakes = []
        for h in self.hooks:
            w = h.wake_at(view) if hasattr(h, "wake_at") else None
            if w is None:
                return None
            wakes.append(w)
        return min(wakes)


def _score_traces(outs, budgets: list[int], termination_text: str, reward) -> tuple[list, list]:
    """BudgetTrace[request][sample] of the outputs, and the (trace, budget index) pairs no branch answered."""
    results, missing = [], []
    for r, out in enumerate(outs):
        row = []
        for comp in out.outputs:
            tr = _score_trace(r, len(out.prompt_token_ids), comp, budgets, termination_text, reward)
            missing += [(tr, j) for j, src in enumerate(tr.sources) if src == "fallback"]
            row.append(tr)
        results.append(row)
    return results, missing


def _score_trace(r: int, n_prompt: int, comp, budgets: list[int], termination_text: str, reward) -> BudgetTrace:
    """One trace's point at each budget: its own answer once it stopped, else its branches' (NaN: no branch)."""
    n_out = len(comp.token_ids)
    tr = BudgetTrace(r, comp.index, n_prompt, n_out, budgets)
    scores = score_branches([b for b in comp.branches if b.tag.kind == "budget"], termination_text,
                            lambda text: reward(text, r))
    own = reward(comp.text, r)
    for b in budgets:
        s = scores.get(BranchTag.budget(b))
        if comp.finish_reason == "stop" and n_out <= b:
            tr.add(own, n_prompt + n_out, [comp.text], "own")
        elif s is not None:
            tr.add(s.J, n_prompt + b + s.mean_answer_tokens, s.texts, "fork")
        else:
            tr.add(float("nan"), float("nan"), [], "fallback")
    return tr


def _answer_fallbacks(engine, outs, missing, budgets: list[int], termination_ids: list[int], termination_text: str,
                      meta_params, reward):
    """Answer the budgets no branch answered by a fresh generation from the cut prefix + termination text (the
    prefix comes from the cache) -> the GenerationStats of that generate call."""
    fresh_prompts = []
    for tr, j in missing:
        comp = outs[tr.request_index].outputs[tr.sample_index]
        fresh_prompts.append(list(outs[tr.request_index].prompt_token_ids)
                             + list(comp.token_ids[:budgets[j]]) + list(termination_ids))
    fresh = engine.generate(fresh_prompts, meta_params, use_tqdm=False)
    for (tr, j), fo in zip(missing, fresh.outputs):
        s = score_answers(fo.outputs, termination_text, lambda text, r=tr.request_index: reward(text, r))
        tr.J[j], tr.tokens[j], tr.answers[j] = s.J, tr.num_prompt_tokens + budgets[j] + s.mean_answer_tokens, s.texts
    return fresh.stats
