"""Extrapolation past the training budget by budget forcing (the paper's protocol).

Round 0 lets each trace think for up to `round_tokens` tokens. Whenever a round ends because the model stopped
thinking (a think-end string or a stop token), that ending is cut off and the next marker (`Wait`, `But wait`,
`Alternatively`, `But hold on`, in turn) is appended after a blank line, so the model goes on thinking for another
round; a round that ran out of tokens simply continues. Every `eval_every` rounds (and after the last) the meta-prover
answers from each trace's context + termination text, and the mean reward is the accuracy at that point; the x of the
curve is the mean number of tokens generated so far (markers included).

Each round is one engine call for all traces; the context of a trace is its prompt plus everything so far, so with
prefix caching only the round's new tokens are computed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from .metrics import mean


@dataclass
class ExtrapolationCurve:
    rounds: list[int] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)      # mean thinking tokens per trace so far
    accuracy: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)     # share of traces whose model stopped thinking that round

    def to_dict(self) -> dict:
        return asdict(self)


def trim_stop(tokens: list[int], decode: Callable[[list[int]], str], stop_strings: Sequence[str],
              stop_token_ids: Sequence[int]) -> list[int]:
    """tokens without the ending that stopped them (trailing stop tokens, or everything from the token where a stop
    string starts in the decoded text) and without trailing whitespace tokens, so a marker can follow."""
    tokens = list(tokens)
    while tokens and tokens[-1] in set(stop_token_ids):
        tokens.pop()
    text = decode(tokens)
    starts = [text.find(s) for s in stop_strings if s in text]
    if starts:
        start = min(starts)  # drop from the token holding the first character of the first stop string
        i = next(i for i in range(1, len(tokens) + 1) if len(decode(tokens[:i])) > start)
        tokens = tokens[:i - 1]
    while tokens and not decode(tokens[-1:]).strip():
        tokens.pop()
    return tokens


def extrapolate(engine, tokenizer, prompts: list[list[int]], reward: Callable[[str, int], float], *,
                rounds: int, round_tokens: int, eval_every: int, markers: Sequence[str], think_end: Sequence[str],
                termination_text: str, trace_params, meta_params, seed: int = 0,
                stop_token_ids: Sequence[int] = (), marker_prefix: str = "\n\n") -> ExtrapolationCurve:
    """Accuracy every `eval_every` rounds of forced further thinking; reward(text, request_index) checks an answer.

    Every prompt and round draws with its own seed (derived from `seed`; the params' own seeds are not used), so
    the problems' traces and answers are independent draws."""
    from dataclasses import replace

    from mrt.seeds import derive_seed

    def seeded(params, purpose: str, r: int) -> list:
        return [replace(params, seed=derive_seed(purpose, seed, r, i)) for i in range(len(prompts))]

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False)

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    term_ids = encode(termination_text)
    params = replace(trace_params, n=1, max_tokens=round_tokens, stop_strings=list(think_end) or None,
                     stop_token_ids=list(stop_token_ids) or None)
    thought: list[list[int]] = [[] for _ in prompts]
    curve = ExtrapolationCurve()
    for r in range(rounds + 1):
        outs = engine.generate([p + t for p, t in zip(prompts, thought)], seeded(params, "extrapolate", r)).outputs
        stopped = []
        for i, out in enumerate(outs):
            comp = out.outputs[0]
            done = comp.finish_reason == "stop"
            new = trim_stop(comp.token_ids, decode, think_end, stop_token_ids) if done else list(comp.token_ids)
            thought[i] = thought[i] + new
            stopped.append(done)
        if r % eval_every == 0 or r == rounds:
            answers = engine.generate([p + t + term_ids for p, t in zip(prompts, thought)],
                                      seeded(meta_params, "extrapolate-answer", r)).outputs
            acc = mean([mean([reward(termination_text + c.text, i) for c in o.outputs]) for i, o in enumerate(answers)])
            curve.rounds.append(r)
            curve.tokens.append(mean([len(t) for t in thought]))
            curve.accuracy.append(acc)
            curve.stopped.append(mean([float(s) for s in stopped]))
        if r < rounds:
            marker = encode(marker_prefix + markers[r % len(markers)])
            thought = [t + marker if s else t for t, s in zip(thought, stopped)]
    return curve
