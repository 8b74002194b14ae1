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
    num_new_tokens: int = 0             # tokens sampled in the last step
    hook_seen: int = 0                  # output tokens the generate hook had seen when it last saw this sequence
    hook_wake: int = 0                  # output tokens before which the hook need not see it (Engine._call_hook)

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


class SequenceView:
    """What the generate hook sees of a running (non-branch) sequence after a step that sampled new tokens.

    Read-only, and made without copying the sequence (`SequenceView.of`): it holds the sequence's own token list and
    the length it had when the view was made (tokens are only ever appended, so a view read later still shows that
    step). The engine makes one per trace per step, so what it costs is on every step's critical path:
    - O(1): `num_prompt_tokens`, `num_output_tokens`, `new_token_ids` (the tokens sampled since the hook last saw
      this sequence, `num_new_tokens` of them), `output_token(i)`;
    - O(length), a copy on each access: `prompt_token_ids`, `output_token_ids` (for hooks that want whole lists).
    The constructor takes lists (tests, callers without a Sequence) and keeps a copy of them."""
    __slots__ = ("_request_index", "_sample_index", "_num_new_tokens", "_tokens", "_num_prompt", "_len")

    def __init__(self, request_index: int, sample_index: int, prompt_token_ids: list[int],
                 output_token_ids: list[int], num_new_tokens: int):
        prompt = list(prompt_token_ids)
        self._set(request_index, sample_index, num_new_tokens, prompt + list(output_token_ids), len(prompt))

    @classmethod
    def of(cls, seq: "Sequence", num_new_tokens: int) -> "SequenceView":
        """A view of seq as it is now, over its own token list (no copy)."""
        view = cls.__new__(cls)
        view._set(seq.request_index, seq.sample_index, num_new_tokens, seq.token_ids, seq.num_prompt_tokens)
        return view

    def _set(self, request_index, sample_index, num_new_tokens, tokens, num_prompt) -> None:
        self._request_index, self._sample_index, self._num_new_tokens = request_index, sample_index, num_new_tokens
        self._tokens, self._num_prompt, self._len = tokens, num_prompt, len(tokens)

    @property
    def request_index(self) -> int:
        return self._request_index

    @property
    def sample_index(self) -> int:
        return self._sample_index

    @property
    def num_new_tokens(self) -> int:
        """Output tokens sampled since the hook last saw this sequence (1 when it sees it every step)."""
        return self._num_new_tokens

    @property
    def num_prompt_tokens(self) -> int:
        return self._num_prompt

    @property
    def num_output_tokens(self) -> int:
        return self._len - self._num_prompt

    @property
    def new_token_ids(self) -> list[int]:
        """The last num_new_tokens output tokens (a copy of those only)."""
        return self._tokens[self._len - self._num_new_tokens:self._len]

    def output_token(self, i: int) -> int:
        """Output token i (i < 0 counts from the view's last token), without copying the output."""
        n = self._len - self._num_prompt
        if not -n <= i < n:
            raise IndexError(f"output token {i} of a view with {n} output tokens")
        return self._tokens[self._num_prompt + i if i >= 0 else self._len + i]

    @property
    def prompt_token_ids(self) -> list[int]:
        """A copy of the prompt (O(prompt length): hooks on the engine's path read num_prompt_tokens instead)."""
        return self._tokens[:self._num_prompt]

    @property
    def output_token_ids(self) -> list[int]:
        """A copy of the output so far (O(length): hooks on the engine's path read new_token_ids / output_token)."""
        return self._tokens[self._num_prompt:self._len]

    def __eq__(self, other) -> bool:
        if not isinstance(other, SequenceView):
            return NotImplemented
        return (self._request_index, self._sample_index, self._num_new_tokens, self._num_prompt,
                self._tokens[:self._len]) == (other._request_index, other._sample_index, other._num_new_tokens,
                                              other._num_prompt, other._tokens[:other._len])

    __hash__ = None

    def __repr__(self) -> str:
        return (f"SequenceView(request_index={self._request_index}, sample_index={self._sample_index}, "
                f"num_prompt_tokens={self._num_prompt}, num_output_tokens={self.num_output_tokens}, "
                f"num_new_tokens={self._num_new_tokens})")
