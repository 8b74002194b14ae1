"""The meta-prover: online episode segmentation through the engine's hook, forks at every boundary, J estimates.

While a trace is generated, its `EpisodeStream` (mrt.episodes) receives each step's new tokens. As soon as a
boundary b (a completion token count) is certain, the hook asks the engine for `m` branches of the trace at
`position = prompt + b`, tagged `BranchTag.episode(b)`: each is fed the termination text and samples a short answer
(`answer_max_tokens`, `temperature`, `top_p` of the config). The branches share the trace's KV blocks up to the fork
point, so only the termination text and the answers are computed. Once per prompt (on the first sample's first
step) `m` branches tagged `BranchTag.prompt()` are forked from the bare prompt too: they estimate J_{-1}, shared by
all samples of that prompt. Budget forcing (mrt.eval.budget_forcing) forks the same way at token budgets, tagged
`BranchTag.budget(b)`.

At the end of a trace (its last step, when the hook sees an EOS token or the length limit) the stream is finished, and
boundaries that were waiting for more text fork then.

The branches are the one record of what was forked: a trace's boundaries are the positions of its episode branches
(a boundary the engine could not fork has no branch, so no J, and is no boundary), and `score_branches` scores every
branch once. J of a tag = mean reward of its branch answers, each scored as `termination_text + answer text` against
the problem's answer (the reward sees the forced answer as the model wrote it).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .episodes import EpisodeStream, Segmenter
from .rollout import ForkRequest, SamplingParams

BRANCH_KINDS = ("prompt", "episode", "budget")


@dataclass(frozen=True)
class BranchTag:
    """What a meta-prover branch answers for: the bare prompt, an episode boundary or a token budget, at `position`
    completion tokens (0 for the bare prompt)."""
    kind: str
    position: int = 0

    def __post_init__(self):
        if self.kind not in BRANCH_KINDS:
            raise ValueError(f"BranchTag.kind must be one of {BRANCH_KINDS}, got {self.kind!r}")

    @classmethod
    def prompt(cls) -> "BranchTag":
        return cls("prompt", 0)

    @classmethod
    def episode(cls, boundary: int) -> "BranchTag":
        return cls("episode", boundary)

    @classmethod
    def budget(cls, budget: int) -> "BranchTag":
        return cls("budget", budget)


@dataclass
class BranchScore:
    """The scored answers of one tag's branches: their checked texts and rewards, and answer lengths in tokens."""
    texts: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)

    @property
    def J(self) -> float:
        return sum(self.rewards) / len(self.rewards)

    @property
    def mean_answer_tokens(self) -> float:
        return sum(self.answer_tokens) / len(self.answer_tokens)

    def merge(self, other: "BranchScore") -> "BranchScore":
        return BranchScore(self.texts + other.texts, self.rewards + other.rewards,
                           self.answer_tokens + other.answer_tokens)


def score_answers(answers: Iterable, termination_text: str, score: Callable[[str], float]) -> BranchScore:
    """Score forced answers (anything with `.text` and `.token_ids`: branches or fresh completions) once each, as
    termination_text + answer text; score(text) -> 0/1 checks it against the problem's answer."""
    out = BranchScore()
    for a in answers:
        text = termination_text + a.text
        out.texts.append(text)
        out.rewards.append(float(score(text)))
        out.answer_tokens.append(len(a.token_ids))
    return out


def score_branches(branches: Iterable, termination_text: str,
                   score: Callable[[str], float]) -> dict[BranchTag, BranchScore]:
    """One completion's (or request's) BranchOutputs -> {tag: BranchScore}, every branch scored once."""
    by_tag: dict[BranchTag, list] = {}
    for br in branches:
        by_tag.setdefault(br.tag, []).append(br)
    return {tag: score_answers(brs, termination_text, score) for tag, brs in by_tag.items()}


def episode_J(scores: dict[BranchTag, BranchScore], num_tokens: int) -> tuple[list[int], list[float]]:
    """(boundaries, J at each) of one trace from its scored branches: the episode tags inside the trace
    (1 <= b <= num_tokens), in order."""
    bounds = sorted(t.position for t in scores if t.kind == "episode" and 1 <= t.position <= num_tokens)
    return bounds, [scores[BranchTag.episode(b)].J for b in bounds]


class MetaProver:
    """One generate call's hook. Build one per `Engine.generate`; score the outputs' branches after
    (`score_branches`, `episode_J`)."""

    def __init__(self, segmenter: Segmenter | None, tokenizer, *, termination_ids: list[int], m: int,
                 answer_max_tokens: int, temperature: float, top_p: float, max_tokens: int,
                 max_len: int | None = None, stop_token_ids: list[int] = (), prompt_branches: bool = True,
                 fork_episodes: bool = True, seed: int | None = None):
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        if not termination_ids:
            raise ValueError("termination_ids: the termination text tokenised to nothing")
        self.segmenter = segmenter
        self.tokenizer = tokenizer
        self.termination_ids = list(termination_ids)
        self.params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=answer_max_tokens, n=m,
                                     seed=seed)
        self.max_tokens = max_tokens
        self.max_len = max_len
        self.stop_token_ids = set(stop_token_ids)
        self.prompt_branches = prompt_branches
        self.fork_episodes = fork_episodes and segmenter is not None
        self.streams: dict[tuple[int, int], EpisodeStream] = {}
        self._prompt_forked: set[int] = set()

    @classmethod
    def from_config(cls, cfg, segmenter: Segmenter | None, tokenizer, *, termination_ids: list[int],
                    max_tokens: int, max_len: int | None = None, stop_token_ids: list[int] = (),
                    prompt_branches: bool = True, seed: int | None = None) -> "MetaProver":
        """From a `MetaProverConfig` section; the bare-prompt branches run when both the call and the config ask."""
        return cls(segmenter, tokenizer, termination_ids=termination_ids, m=cfg.m,
                   answer_max_tokens=cfg.answer_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                   max_tokens=max_tokens, max_len=max_len, stop_token_ids=stop_token_ids,
                   prompt_branches=prompt_branches and cfg.prompt_branches, seed=seed)

    # ---- the engine hook ----------------------------------------------------------------------------------------
    # It reads only what a SequenceView gives in O(1) (lengths, the new tokens, the last token): never a copy of the
    # trace, which at every step of a 24k-token trace would be quadratic host time.
    def __call__(self, view) -> list[ForkRequest] | None:
        forks = self._prompt_forks(view)
        if self.fork_episodes:
            bounds = self._new_boundaries(view)
            if bounds:
                P = view.num_prompt_tokens
                forks += [ForkRequest(self.termination_ids, self.params, tag=BranchTag.episode(b), position=P + b)
                          for b in bounds]
        return forks

    def wake_at(self, view) -> int | None:
        """For the engine (Engine._call_hook), after a call on view: the output length from which this trace must be
        shown again (its last step is shown anyway); None: every step. A trace whose stream can give no boundary any
        more waits for its end (the bare-prompt branches fork on a sample's first call); the fixed segmenter waits
        for its next chunk end; a text segmenter reads every token."""
        if not self.fork_episodes:
            return _AT_END
        stream = self.streams.get((view.request_index, view.sample_index))
        if stream is None:
            return None
        if stream.closed:
            return _AT_END
        return stream.tokens_needed()

    def _prompt_forks(self, view) -> list[ForkRequest]:
        """The bare-prompt branches, once per prompt (on whichever of its samples runs first)."""
        if not self.prompt_branches or view.request_index in self._prompt_forked:
            return []
        self._prompt_forked.add(view.request_index)
        return [ForkRequest(self.termination_ids, self.params, tag=BranchTag.prompt(),
                            position=view.num_prompt_tokens)]

    def _new_boundaries(self, view) -> list[int]:
        """Feed the tokens new since the last call to the trace's stream -> the boundaries now certain (all of them at
        its end). A closed stream (no boundary can come) is not fed: feeding it would decode text for nothing."""
        key = (view.request_index, view.sample_index)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.segmenter.stream(self.tokenizer)
        if stream.closed:
            return []
        new = stream.feed(view.new_token_ids)
        if self._ends_now(view):
            new = new + stream.finish()          # the trace ends this step: decide what waited for more text
        return new

    def _ends_now(self, view) -> bool:
        n_out, P = view.num_output_tokens, view.num_prompt_tokens
        return n_out >= self.max_tokens or (self.max_len is not None and P + n_out >= self.max_len) \
            or bool(n_out and view.output_token(-1) in self.stop_token_ids)


# A wake_at that never comes before a trace's end: the engine shows the trace at its last step only.
_AT_END = sys.maxsize
