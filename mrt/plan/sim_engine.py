"""The rollout engine run on scripted sequences: the real step loop, scheduler and block manager, a priced runner.

`SimEngine` is `mrt.rollout.Engine` with no model: `Engine.step` runs unchanged (schedule -> run -> mark computed ->
join siblings -> sample -> stop -> hook -> forks -> finish), with the block manager's prefix cache, copy-on-write,
sibling sharing, forks and preemptions exactly as a run meets them. Three parts are replaced:
- the runner is a `PricingRunner` (prices each step, computes nothing);
- sampling appends scripted tokens: a trace runs to its scripted completion length, a branch to its answer length
  (token ids are drawn from a cycled random stream; block hashes chain on the prefix, so no two prompts collide);
- the hook is the meta-prover's forking rule without the text: the bare-prompt branches on a prompt's first sampled
  step (when `prompt_branches`), and a fork at each scripted boundary b once the trace has b + MARKER_LAG completion
  tokens (the real segmenter forks as soon as the marker's word is complete), or at its end. Like the real hook's
  `wake_at` (mrt.meta_prover), it marks a trace the engine need not show it any more (`seq.hook_wake`) once the
  trace has `max_episodes - 1` boundaries, and from the start with the fixed segmenter (it wakes only at chunk
  ends); the pricing runner charges the hook's host time only for traces still shown.
Variant `share_forks=False` (no prefix sharing): prefix caching is off and each of a fork's m branches is a fresh
sequence that prefills the parent's prefix and the termination text itself (bench_rollout's method (ii)).

Coarsening (`coarsen` k): each sampling step appends up to k tokens to a sequence, so the scheduler meets every
decode k tokens at a time (fewer Python steps: a paper-shape rank in seconds, not minutes). Token, FLOP and byte
totals are unchanged (the runner prices a k-token decode as k steps); what moves is timing inside the k steps: blocks
are reserved k tokens ahead (preemption can come up to k - 1 tokens earlier), a sequence that finishes mid-way holds
its batch slot to the end of the k steps, and a boundary is seen up to k - 1 tokens late (its branches prefill
those tokens of the prefix). With k = 1 it is the engine's own step sequence.
"""
from __future__ import annotations

import random
import sys

from ..rollout.block_manager import BlockManager
from ..rollout.engine import Engine
from ..rollout.scheduler import Scheduler
from ..rollout.sequence import BranchOrigin, ForkRequest, SamplingParams, Sequence
from ..rollout.stats import GenerationStats
from .pricing_runner import PricingRunner
from .workload import Workload

MARKER_LAG = 2          # completion tokens after a boundary before the segmenter is sure of it
_STREAM = 1 << 16       # length of the cycled token stream


class _ShapeConfig:
    """What Engine.step reads of a model config."""

    def __init__(self, shape):
        self.eos_token_ids = list(shape.eos_token_ids)
        self.vocab_size = shape.vocab
        self.max_position_embeddings = shape.context


class SimEngine(Engine):
    def __init__(self, runner: PricingRunner, *, num_blocks: int, block_size: int, max_num_seqs: int,
                 max_num_batched_tokens: int, enable_prefix_caching: bool, max_model_len: int, coarsen: int = 1,
                 share_forks: bool = True, seed: int = 0):
        # No Engine.__init__: there is no model to size the cache from or to run.
        self.model = None
        self.tokenizer = None
        self.config = _ShapeConfig(runner.shape)
        self.max_model_len = max_model_len
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching and share_forks)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=max_num_seqs,
                                   max_num_batched_tokens=max_num_batched_tokens)
        self.runner = runner
        self.coarsen = max(1, int(coarsen))
        self.share_forks = share_forks
        rng = random.Random(seed)
        self._stream = [rng.randrange(2, runner.shape.vocab) for _ in range(_STREAM)]
        self._cursor = 0
        self._targets: dict[int, int] = {}          # seq_id -> completion (or answer) length
        self._bounds: dict[int, list[int]] = {}     # trace seq_id -> boundaries not forked yet
        self._prompt_forked: set[int] = set()

    def _tokens(self, n: int) -> list[int]:
        i = self._cursor if self._cursor + n <= _STREAM else 0
        self._cursor = i + n
        return self._stream[i:i + n]

    # ---- one simulated generate call ----------------------------------------------------------------------------
    def simulate(self, workload: Workload, *, max_new_tokens: int, meta=None, episodes=None) -> GenerationStats:
        """Run the workload's traces (and the meta-prover's branches when `meta` is a MetaProverConfig) to the end;
        `episodes` (an EpisodesConfig) says when the real hook stops needing a trace (None: never)."""
        self._meta = meta
        self._max_boundaries = None if episodes is None or episodes.max_episodes is None \
            else episodes.max_episodes - 1
        self._fixed = episodes is not None and episodes.segmenter == "fixed"
        self._forked: dict[int, int] = {}
        self._term = self._tokens(workload.termination_tokens)
        self._answer = max(1, round(workload.answer_tokens))
        if meta is not None:
            self._branch_params = SamplingParams(temperature=meta.temperature, top_p=meta.top_p,
                                                 max_tokens=meta.answer_max_tokens, n=meta.m)
        stats = GenerationStats()
        for i, group in enumerate(workload.groups):
            prompt = self._tokens(group[0].prompt)
            room = self.max_model_len - len(prompt)
            params = SamplingParams(max_tokens=max_new_tokens, n=len(group))
            seqs = self._add_request(i, prompt, params)
            for seq, script in zip(seqs, group):
                self._targets[seq.seq_id] = max(1, min(script.completion, max_new_tokens, room))
                self._bounds[seq.seq_id] = [b for b in script.boundaries if b < self._targets[seq.seq_id]]
        while self.scheduler.has_unfinished():
            self.step(self._hook if meta is not None else None, stats)
        return stats

    # ---- the replaced parts of Engine.step ----------------------------------------------------------------------
    def _target(self, seq: Sequence) -> int:
        t = self._targets.get(seq.seq_id)
        if t is None:
            t = self._targets[seq.seq_id] = max(1, min(self._answer, self.max_model_len - seq.num_prompt_tokens))
        return t

    def _sample(self, seqs, logits, stats) -> None:
        for seq in seqs:
            left = self._target(seq) - seq.num_output_tokens
            n = max(1, min(self.coarsen, left))
            if n == left and n > 1:
                n -= 1      # the last token alone: as in the engine, a trace's final token is sampled, never computed
            for tok in self._tokens(n):
                seq.append_token(tok, 0.0)
                stats.count_sampled(seq.is_branch)
            seq.num_new_tokens = n

    def _stopped(self, seqs) -> list[Sequence]:
        done = []
        for seq in seqs:
            if seq.num_output_tokens >= self._target(seq):
                seq.finish_reason = "length" if seq.num_output_tokens >= seq.params.max_tokens else "stop"
                done.append(seq)
        return done

    def _call_hook(self, hook, seqs, stats) -> None:
        if hook is None:
            return
        for seq in seqs:
            if not seq.is_branch:
                for req in hook(seq):
                    self._fork(seq, req, stats)

    def _hook(self, seq: Sequence) -> list[ForkRequest]:
        """The meta-prover's forks for a trace that just sampled (scripted boundaries, no text)."""
        forks = []
        P = seq.num_prompt_tokens
        if self._meta.prompt_branches and seq.request_index not in self._prompt_forked:
            self._prompt_forked.add(seq.request_index)
            forks.append(ForkRequest(self._term, self._branch_params, tag=("prompt", 0), position=P))
        pending = self._bounds.get(seq.seq_id)
        if pending:
            out = seq.num_output_tokens
            ends = out >= self._target(seq)
            while pending and (ends or pending[0] + MARKER_LAG <= out):
                b = pending.pop(0)
                forks.append(ForkRequest(self._term, self._branch_params, tag=("episode", b), position=P + b))
                self._forked[seq.seq_id] = self._forked.get(seq.seq_id, 0) + 1
        cap = self._max_boundaries
        if self._fixed or (cap is not None and self._forked.get(seq.seq_id, 0) >= cap):
            seq.hook_wake = sys.maxsize     # the real hook's wake_at: not shown again before its end
        return forks

    def _fork(self, parent: Sequence, req: ForkRequest, stats: GenerationStats) -> None:
        if self.share_forks:
            return super()._fork(parent, req, stats)
        # No sharing: m fresh sequences, each prefilling prefix + continuation from scratch.
        position = len(parent) if req.position is None else req.position
        tokens = parent.token_ids[:position] + list(req.continuation_token_ids)
        origin = BranchOrigin(parent, position, list(req.continuation_token_ids), req.tag)
        one = SamplingParams(temperature=req.params.temperature, top_p=req.params.top_p,
                             max_tokens=req.params.max_tokens, n=1)
        for k in range(req.params.n):
            child = Sequence(list(tokens), one, request_index=parent.request_index, sample_index=k, branch=origin)
            parent.branches.append(child)
            stats.branches += 1
            self.scheduler.add(child)
