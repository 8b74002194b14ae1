"""What `Engine.generate` returns: one RequestOutput per prompt, n CompletionOutputs each, their branches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BranchOutput:
    """A fork of a completion: the parent's first `position` tokens (prompt included) + continuation + answer."""
    tag: Any
    position: int
    continuation_token_ids: list[int]
    token_ids: list[int]               # the branch's sampled tokens (after the continuation)
    logprobs: list[float]
    finish_reason: str
    text: str


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: list[float]              # log_softmax(logits / T)[token] of each sampled token (T = 1 when greedy)
    finish_reason: str                 # "stop" | "length"
    num_cached_tokens: int             # prompt tokens served from the prefix cache (or shared with a sibling)
    text: str
    branches: list[BranchOutput] = field(default_factory=list)


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
