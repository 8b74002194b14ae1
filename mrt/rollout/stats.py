"""What one `Engine.generate` call computed: token counts by kind, preemptions, forks, copies, steps.

Each call counts into a fresh GenerationStats and returns it (`Generation.stats`): no totals live in the engine, so
a caller never snapshots and diffs a shared counter. Every token the model runs is in `tokens_computed` once. A
sequence's prompt (for a branch: the parent's prefix + its continuation) splits into tokens computed for the first
time (`prompt_tokens_computed`, branches included; `branch_prompt_tokens_computed` is the branches' share) and
tokens it never computed: served from the prefix cache or shared with the sample, branch or parent it joined
(`prompt_tokens_cached` for prompts, `branch_prompt_tokens_cached` for branches). A token computed again after a
preemption is a `recomputed_tokens`, never a prompt token twice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class GenerationStats:
    prompt_tokens_computed: int = 0
    prompt_tokens_cached: int = 0
    generated_tokens: int = 0               # tokens sampled by the prompts' samples
    branch_prompt_tokens_computed: int = 0
    branch_prompt_tokens_cached: int = 0
    branch_generated_tokens: int = 0        # tokens sampled by branches
    recomputed_tokens: int = 0
    tokens_computed: int = 0
    preemptions: int = 0
    branches: int = 0                       # branch sequences forked
    cow_copies: int = 0                     # copy-on-write block copies
    steps: int = 0

    def as_dict(self) -> dict[str, int]:
        """{counter: value}, in field order: what a logger takes."""
        return dataclasses.asdict(self)

    def __add__(self, other: "GenerationStats") -> "GenerationStats":
        return GenerationStats(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                                  for f in dataclasses.fields(self)})

    def count_cached(self, is_branch: bool, n: int) -> None:
        if is_branch:
            self.branch_prompt_tokens_cached += n
        else:
            self.prompt_tokens_cached += n

    def count_sampled(self, is_branch: bool) -> None:
        if is_branch:
            self.branch_generated_tokens += 1
        else:
            self.generated_tokens += 1
