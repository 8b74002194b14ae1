"""The meta-prover: online episode segmentation through the engine's hook, forks at every boundary, J estimates.

While a trace is generated, its `EpisodeStream` (mrt.episodes) receives each step's new tokens. As soon as a
boundary b (a completion token count) is certain, the hook asks the engine for `m` branches of the trace at
`position = prompt + b`: each is fed the termination text and samples a short answer (`answer_max_tokens`,
`temperature`, `top_p` of the config). The branches share the trace's KV blocks up to the fork point, so only the
termination text and the answers are computed. Once per prompt (on the first sample's first step) `m` branches are
forked from the bare prompt too: they estimate J_{-1}, shared by all samples of that prompt.

At the end of a trace (its last step, when the hook sees an EOS token or the length limit) the stream is finished, and
boundaries that were waiting for more text fork then.

J of a boundary = mean reward of its m branch answers, each scored as `termination_text + answer text` against the
problem's answer (the reward sees the forced answer as the model wrote it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .episodes import EpisodeStream, Segmenter
from .rollout import ForkRequest, SamplingParams

PROMPT_TAG = "prompt"     # tag of the bare-prompt branches; boundary branches are tagged ("episode", b)


@dataclass
class TraceEpisodes:
    """What the meta-prover found for one trace: its boundaries (completion tokens) in order."""
    boundaries: list[int] = field(default_factory=list)


class MetaProver:
    """One generate call's hook. Build one per `Engine.generate`; read `boundaries` after (J comes from scoring the
    branches, `branch_success`)."""

    def __init__(self, segmenter: Segmenter | None, tokenizer, *, termination_ids: list[int], m: int,
                 answer_max_tokens: int, temperature: float, top_p: float, max_tokens: int,
                 max_len: int | None = None, stop_token_ids: list[int] = (), prompt_branches: bool = True, fork_episodes: bool = True,
                 seed: int | None = None):
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
        self.traces: dict[tuple[int, int], TraceEpisodes] = {}
        self._prompt_forked: set[int] = set()

    # ---- the engine hook ----------------------------------------------------------------------------------------
    def __call__(self, view) -> list[ForkRequest] | None:
        key = (view.request_index, view.sample_index)
        forks = []
        if self.prompt_branches and view.request_index not in self._prompt_forked:
            self._prompt_forked.add(view.request_index)
            forks.append(ForkRequest(self.termination_ids, self.params, tag=PROMPT_TAG,
                                     position=len(view.prompt_token_ids)))
        if not self.fork_episodes:
            return forks
        trace = self.traces.setdefault(key, TraceEpisodes())
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.segmenter.stream(self.tokenizer)
        out = view.output_token_ids
        new = stream.feed(out[len(out) - view.num_new_tokens:])
        P = len(view.prompt_token_ids)
        if len(out) >= self.max_tokens or (self.max_len is not None and P + len(out) >= self.max_len) \
                or (out and out[-1] in self.stop_token_ids):
            new = new + stream.finish()          # the trace ends this step: decide what waited for more text
        for b in new:
            trace.boundaries.append(b)
            forks.append(ForkRequest(self.termination_ids, self.params, tag=("episode", b), position=P + b))
        return forks

    def boundaries(self, request_index: int, sample_index: int) -> list[int]:
        t = self.traces.get((request_index, sample_index))
        return list(t.boundaries) if t else []


def branch_success(branches, termination_text: str, answer, reward_fn) -> tuple[float | None, dict]:
    """(J_prompt estimate or None, {boundary: J}) from one completion's or one request's branches.

    branches: BranchOutputs; each is scored as termination_text + its answer text.
    """
    sums: dict = {}
    for br in branches:
        r = float(reward_fn(termination_text + br.text, answer))
        s = sums.setdefault(br.tag if br.tag == PROMPT_TAG else br.tag[1], [0.0, 0])
        s[0] += r
        s[1] += 1
    J_prompt = None
    if PROMPT_TAG in sums:
        tot, n = sums.pop(PROMPT_TAG)
        J_prompt = tot / n
    return J_prompt, {b: tot / n for b, (tot, n) in sums.items()}
