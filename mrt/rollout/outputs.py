"""What `Engine.generate` returns: one RequestOutput per prompt, n CompletionOutputs each, their branches.

`text` is decoded on first access (and kept): generating from token ids needs no tokenizer, so an engine without
one returns outputs whose ids are complete and whose `.text` raises, saying why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


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
    logprobs: list[float]
    finish_reason: str
    text_: _Text = field(default_factory=_Text, repr=False)

    @property
    def text(self) -> str:
        return self.text_.get()


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: list[float]              # log_softmax(logits / T)[token] of each sampled token (T = 1 when greedy)
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
    outputs: list[CompletionOutput]
