"""What `Engine.generate` returns: a Generation, the call's outputs (one RequestOutput per prompt, n
CompletionOutputs each, their branches) and its counters (GenerationStats, see `stats`).

Log-probs are 1-D float32 tensors, one per sampled token, made once when generation ends: what the trainer packs.
`text` is decoded on first access (and kept): generating from token ids needs no tokenizer, so an engine without
one returns outputs whose ids are complete and whose `.text` raises, saying why.
A request the engine cannot run (an empty or too long prompt, a token id outside the vocabulary) has no outputs and
its `error` says why; a fork that cannot start (a position past its parent's end) is a BranchOutput with no tokens,
finish_reason "error" and its `error`. The other requests of the call are not affected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .stats import GenerationStats


@dataclass
class _Text:
    """The decoded text of an output, made on first access by `decode()`."""
    decode: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    value: str | None = None

    def get(self) -> str:
        if self.value is None:
            if self.decode is None:
                raise RuntimeError("this output has no text")
            self.value, self.decode = self.decode(), None
        return self.value


@dataclass
class BranchOutput:
    """A fork of a completion: the parent's first `position` tokens (prompt included) + continuation + answer."""
    tag: Any
    position: int
    continuation_token_ids: list[int]
    token_ids: list[int]               # the branch's sampled tokens (after the continuation)
    logprobs: torch.Tensor             # (len(token_ids),) float32, as CompletionOutput.logprobs
    finish_reason: str                 # as CompletionOutput's, or "error" for a fork that could not start
    text_: _Text = field(default_factory=_Text, repr=False)
    error: str | None = None           # why the fork could not start (finish_reason "error"), else None

    @property
    def text(self) -> str:
        return self.text_.get()


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: torch.Tensor             # (len(token_ids),) float32: log_softmax(logits / T)[token] (T = 1 if greedy)
    finish_reason: str                 # "stop" | "length"
    num_cached_tokens: int             # prompt tokens served from the prefix cache (or shared with a sibling)
    branches: list[BranchOutput] = field(default_factory=list)
    text_: _Text = field(default_factory=_Text, repr=False)

    @property
    def text(self) -> str:
        return self.text_.get()


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]    # empty when the request failed
    error: str | None = None           # why the request could not run (it failed alone), else None


@dataclass
class Generation:
    """One `Engine.generate` call: an output per prompt, in prompt order, and what the call computed."""
    outputs: list[RequestOutput]
    stats: GenerationStats = field(default_factory=GenerationStats)
