"""Accuracy at token budgets by budget forcing, one generation per trace.

Each trace is generated once, up to the largest budget. A generate hook watches it: as soon as its output reaches a
budget b, it asks the engine for `m` meta-prover branches at position `prompt + b` (ForkRequest): each branch shares
the trace's KV blocks up to that point, is fed the termination text and samples a short answer. So only the
termination text and the answers are computed per budget, never the prefix again. J_b of the trace is the mean reward
of its branches' answers (the termination text is part of the checked text: it may open the answer, e.g. `\\boxed{`).

A trace that stopped by itself within b tokens answers with its own output at every budget >= its length (the model
finished thinking; its answer stands). A budget that the hook could not fork (the trace reached it on its very last
step) is answered by a fresh generation from the cut prefix + termination text, which is the same computation
(the prefix comes from the cache); the count of such fallbacks is reported.

The point of the J-vs-tokens curve for budget b is at tokens = prompt + min(b, length) + mean answer tokens (MRT.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .metrics import mean

TAG = "budget"


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
        key = (seq.request_index, seq.sample_index)
        i = self.next_budget.get(key, 0)
        out = seq.output_token_ids
        reqs = []
        while i < len(self.budgets) and self.budgets[i] <= len(out):
            b = self.budgets[i]
            # A prefix that ends with the trace's own stop token is a finished trace: it answers for itself.
            if not out[b - 1] in self.stop_token_ids:
                reqs.append(self._fork(self.termination_ids, self.meta_params, tag=(TAG, b),
                                       position=len(seq.prompt_token_ids) + b))
            i += 1
        self.next_budget[key] = i
        self.num_forks += len(reqs)
        return reqs or None


def generate_with_budgets(engine, prompts: list[list[int]], trace_params, budgets: Sequence[int],
                          termination_ids: list[int], termination_text: str, meta_params,
                          reward: Callable[[str, int], float], *, stop_token_ids: Sequence[int] = (),
                          use_tqdm: bool = False) -> tuple[list[Any], list[list[BudgetTrace]], dict]:
    """Generate `trace_params.n` traces per prompt once, forking the meta-prover at every budget.

    trace_params.max_tokens must be >= max(budgets). reward(text, request_index) -> 0/1 checks an answer of that
    prompt. Returns the engine's outputs, BudgetTrace[request][sample], and stats (forks, fallbacks).
    """
    budgets = sorted(budgets)
    if trace_params.max_tokens < budgets[-1]:
        raise ValueError(f"trace max_tokens ({trace_params.max_tokens}) is below the largest budget ({budgets[-1]})")
    hook = BudgetHook(budgets, termination_ids, meta_params, stop_token_ids=stop_token_ids)
    outs = engine.generate(prompts, trace_params, hook=hook, use_tqdm=use_tqdm)

    results: list[list[BudgetTrace]] = []
    missing: list[tuple[BudgetTrace, int]] = []   # (trace, budget index) answered by a fresh generation
    for r, out in enumerate(outs):
        row = []
        for comp in out.outputs:
            n_prompt, n_out = len(out.prompt_token_ids), len(comp.token_ids)
            tr = BudgetTrace(r, comp.index, n_prompt, n_out, budgets)
            by_tag: dict[int, list] = {}
            for br in comp.branches:
                if isinstance(br.tag, tuple) and br.tag[0] == TAG:
                    by_tag.setdefault(br.tag[1], []).append(br)
            own = reward(comp.text, r)
            for j, b in enumerate(budgets):
                if comp.finish_reason == "stop" and n_out <= b:
                    tr.J.append(own)
                    tr.tokens.append(n_prompt + n_out)
                    tr.answers.append([comp.text])
                    tr.sources.append("own")
                elif b in by_tag:
                    brs = by_tag[b]
                    texts = [termination_text + br.text for br in brs]
                    tr.J.append(mean([reward(t, r) for t in texts]))
                    tr.tokens.append(n_prompt + b + mean([len(br.token_ids) for br in brs]))
                    tr.answers.append(texts)
                    tr.sources.append("fork")
                else:
                    tr.J.append(float("nan"))
                    tr.tokens.append(float("nan"))
                    tr.answers.append([])
                    tr.sources.append("fallback")
                    missing.append((tr, j))
            row.append(tr)
        results.append(row)

    if missing:
        fresh_prompts = []
        for tr, j in missing:
            comp = outs[tr.request_index].outputs[tr.sample_index]
            fresh_prompts.append(list(outs[tr.request_index].prompt_token_ids)
                                 + list(comp.token_ids[:budgets[j]]) + list(termination_ids))
        fresh = engine.generate(fresh_prompts, meta_params, use_tqdm=False)
        for (tr, j), fo in zip(missing, fresh):
            texts = [termination_text + c.text for c in fo.outputs]
            tr.J[j] = mean([reward(t, tr.request_index) for t in texts])
            tr.tokens[j] = tr.num_prompt_tokens + budgets[j] + mean([len(c.token_ids) for c in fo.outputs])
            tr.answers[j] = texts
    stats = {"forks": hook.num_forks, "fallbacks": len(missing)}
    return outs, results, stats
