"""A sequence being generated, and the sampling parameters of its request.

A Sequence is the unit the scheduler, block manager and runner work on: its tokens (prompt + output so far), how
many of them already have their keys/values in the paged cache (`num_computed_tokens`), the blocks that hold them
(`block_table`), and the sampled tokens' log-probs. A branch (a meta-prover fork) is a Sequence like any other whose
"prompt" is the parent's prefix + its continuation text; it records where it came from.

Invariant: tokens [0, num_computed_tokens) have K/V in the cache, in block_table[p // block_size] at slot
p % block_size; tokens [num_computed_tokens, len) are still to be computed. After a sampling step exactly one token
(the one just sampled) is uncomputed.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from ..seeds import derive_seed
from .sampler import draw_key


@dataclass
class SamplingParams:
    """How to sample one request. temperature 0 is greedy; top_k None or 0: no top-k; a seed makes it reproducible.

    stop_token_ids None stops at the model's EOS ids; a list replaces them ([] never stops on a token)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_tokens: int = 256
    n: int = 1
    stop_token_ids: list[int] | None = None
    stop_strings: list[str] | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be None or >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class ForkRequest:
    """Asked for by the generate hook: `params.n` branches of a running sequence at `position` (a token count of the
    parent, prompt included; None = all its tokens now), each fed `continuation_token_ids` and then sampled."""
    continuation_token_ids: list[int]
    params: SamplingParams
    tag: Any = None
    position: int | None = None


class SequenceStatus(enum.Enum):
    WAITING = "waiting"      # holds no blocks; (re)computes from its longest cached prefix when admitted
    RUNNING = "running"      # holds blocks for its computed tokens
    FINISHED = "finished"


_ids = itertools.count()


@dataclass
class BranchOrigin:
    """Where a branch sequence comes from: its parent, the fork point and the continuation it was fed."""
    parent: "Sequence" = field(repr=False)
    position: int
    continuation_token_ids: list[int]
    tag: Any


@dataclass(eq=False)
class Sequence:
    token_ids: list[int]
    params: SamplingParams
    request_index: int = 0
    sample_index: int = 0
    branch: BranchOrigin | None = None
    seq_id: int = field(default_factory=lambda: next(_ids))
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0          # prompt tokens served from the cache at first admission
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)   # chain hashes of the leading full, computed blocks
    logprobs: list[float] = field(default_factory=list)      # per sampled token; outputs get one tensor at the end
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    stop_text_end: int | None = None    # where the output text is cut when a stop string matched
    admitted: bool = False              # has held blocks once (num_cached_tokens is then fixed)
    admitted_counted: bool = False      # its cached prompt tokens are in the engine's stats
    max_computed: int = 0               # most tokens ever computed: below it, computing again is a recompute
    # samples 1..n-1 (or branches 1..m-1) that join when this one's prompt is computed
    siblings: list["Sequence"] = field(default_factory=list, repr=False)
    seed_stream: int | None = None      # this sample's noise stream (from params.seed); None: unseeded
    branches: list["Sequence"] = field(default_factory=list, repr=False)
    num_new_tokens: int = 0             # tokens sampled in the last step (for the hook)

    def __post_init__(self):
        if not self.token_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.token_ids = list(self.token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        if self.params.seed is not None:
            # One stream per sample, so results do not depend on how sequences are batched or preempted.
            # A branch also mixes in its parent's stream and its fork point, so the branches of different traces
            # (which a hook forks with one SamplingParams) and of different boundaries draw differently.
            if self.branch is None:
                self.seed_stream = derive_seed("sample", self.params.seed, 0, self.sample_index, bits=63)
            else:
                parent = self.branch.parent.seed_stream
                self.seed_stream = derive_seed("branch", self.params.seed, -1 if parent is None else parent,
                                               self.branch.position + 1, self.sample_index, bits=63)

    def draw_key(self) -> int | None:
        """The sampler key of this sequence's next token: its stream and how many tokens it has drawn, so a
        recomputed (preempted) sequence draws exactly what it would have."""
        return None if self.seed_stream is None else draw_key(self.seed_stream, self.num_output_tokens)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_branch(self) -> bool:
        return self.branch is not None

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    def append_token(self, token_id: int, logprob: float) -> None:
        self.token_ids.append(int(token_id))
        self.logprobs.append(float(logprob))


@dataclass(frozen=True)
class SequenceView:
    """What the generate hook sees of a running (non-branch) sequence after a step that sampled new tokens."""
    request_index: int
    sample_index: int
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    num_new_tokens: int
