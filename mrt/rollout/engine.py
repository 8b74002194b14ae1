"""The rollout engine: continuous batching over a paged, prefix-shared KV cache, with branch forks.

    engine = Engine(model, tokenizer, block_size=16)          # the model's own parameters: no copy, no sync
    gen = engine.generate(prompts, SamplingParams(...), hook=fn)
    gen.outputs[i].outputs[j].token_ids, .logprobs (float32 tensor), .branches; gen.stats: this call's counters

One step (`step`, one call per stage): schedule (scheduler + block manager) -> run the model on the scheduled tokens
(runner) and mark them computed -> join the siblings of sequences whose tokens are all computed -> sample them
(sampler) -> stop checks -> hook -> forks -> free finished sequences. Each call counts into its own GenerationStats
(`stats`), passed to every stage; the engine keeps no counters between calls.

Sharing, all through the block manager's reference counts:
- the n samples of a prompt: sample 0 prefills the prompt; when its last prompt token is computed, samples 1..n-1
  are forked from it with every prompt block shared and draw their first token from the same logits;
- prompts with a common prefix: the hash-chained prefix cache (also how a preempted sequence resumes cheaply);
- branches: `hook(view)` sees each running, non-branch sequence after a step that gave it new tokens (a view that
  copies nothing; a hook may skip steps it cannot act on, `_call_hook`) and may return ForkRequests; each spawns
  `params.n` branch sequences that share the parent's blocks up to the fork point (a partly filled block is copied
  only when a branch writes into it); the continuation is computed once, by the first branch, and the other n-1
  share it as the n samples of a prompt do; then each samples its own answer.
  Their results come back on the parent's CompletionOutput.branches, each with its ForkRequest's tag as given (the
  engine never reads a tag: what it means is the hook's business).
Stops: a token in `stop_token_ids` (None: the model's EOS ids; [] disables), a stop string in the decoded output
("stop"); `max_tokens` output tokens, the model's context length or the whole KV cache ("length").
Bad requests fail alone: a prompt that is empty, has a token id outside the vocabulary or is too long for the context
or for the whole KV cache gets no samples and its RequestOutput.error says why; a fork at a position outside its
parent's tokens (or whose prefix + continuation is such a prompt) gets a BranchOutput with finish_reason "error" and
its error; every other request of the call runs as if the bad one was not there.
Text: only stop strings and an output's `.text` (decoded on first access) need the tokenizer; `from_pretrained`
loads it lazily, so a folder without tokenizer files serves token-id prompts and raises only when text is needed.
"""
from __future__ import annotations

import functools
import numbers
import os
from typing import Callable

import torch

from .block_manager import BlockManager
from .outputs import BranchOutput, CompletionOutput, Generation, RequestOutput, _Text
from .runner import ModelRunner, kv_cache_bytes_per_block
from .sampler import SamplerBuffers, sample
from .scheduler import ScheduledBatch, Scheduler
from .sequence import BranchOrigin, ForkRequest, SamplingParams, Sequence, SequenceView
from .stats import GenerationStats

Hook = Callable[[SequenceView], "list[ForkRequest] | None"]


class Engine:
    def __init__(self, model, tokenizer=None, *, block_size: int = 16, num_blocks: int | None = None,
                 max_num_seqs: int = 256, max_num_batched_tokens: int = 8192, enable_prefix_caching: bool = True,
                 memory_fraction: float | None = None, max_model_len: int | None = None,
                 grow_kv_cache: bool | None = None, cuda_graphs: bool | None = None):
        """max_model_len: the longest sequence (prompt + output, a branch's prefix + continuation + answer) of the
        run, at most the model's context (the default); sequences stop there ("length"), and the KV cache is sized
        from max_num_seqs of them when num_blocks is None (see `_blocks_from_memory`).
        grow_kv_cache: allocate the KV cache on demand, up to num_blocks (None: on the CPU only).
        cuda_graphs: decode steps on static buffers, replayed as CUDA graphs per batch-size bucket (None: on where
        the model is on CUDA; True elsewhere runs the same buffers eagerly, as the tests do; see cuda_graphs.py)."""
        self.model = model
        self.tokenizer = tokenizer
        self.config = model.config
        context = self.config.max_position_embeddings
        if max_model_len is not None and max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2 (a prompt token and an output token), got {max_model_len}")
        self.max_model_len = context if max_model_len is None else min(max_model_len, context)
        if num_blocks is None:
            num_blocks = self._blocks_from_memory(block_size, max_num_seqs, memory_fraction)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=max_num_seqs,
                                   max_num_batched_tokens=max_num_batched_tokens)
        grow = model.device.type == "cpu" if grow_kv_cache is None else grow_kv_cache
        graphs = model.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self.runner = ModelRunner(model, num_blocks, block_size, grow=grow, cuda_graphs=graphs,
                                  max_num_seqs=max_num_seqs, max_model_len=self.max_model_len)
        self.sampler_buffers = SamplerBuffers()      # the sampler's (B, V) temporaries, reused step after step

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: torch.dtype | str = torch.float32,
                        device: torch.device | str = "cpu", **kw) -> "Engine":
        """Model from `path`; its tokenizer (unless `tokenizer=` is given) is loaded on first use, see LazyTokenizer."""
        from mrt.hub import load_model
        from mrt.models import LazyTokenizer
        model = load_model(path, dtype=dtype, device=device)
        tokenizer = kw.pop("tokenizer", None) or LazyTokenizer(path)
        return cls(model, tokenizer, **kw)

    def reset_prefix_cache(self) -> None:
        """Drop the prefix cache: after an optimizer step the cached K/V no longer match the model's weights."""
        if self.scheduler.has_unfinished():
            raise RuntimeError("reset_prefix_cache: sequences are still running; call it between generate calls")
        self.block_manager.reset_prefix_cache()

    @property
    def kv_cache(self) -> torch.Tensor:
        return self.runner.kv_cache

    def _blocks_from_memory(self, block_size: int, max_num_seqs: int, memory_fraction: float | None) -> int:
        """What the run can use, max_num_seqs sequences of max_model_len tokens, capped by memory_fraction of the free
        device memory (default 0.9 on a GPU, 0.25 of available RAM on the CPU). On the CPU the pool is allocated on
        demand (grow_kv_cache), so this is a ceiling, not a reservation."""
        per_block = kv_cache_bytes_per_block(self.config, block_size, self.model.dtype)
        device = self.model.device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = free * (0.9 if memory_fraction is None else memory_fraction)
        else:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            budget = avail * (0.25 if memory_fraction is None else memory_fraction)
        cap = max_num_seqs * -(-self.max_model_len // block_size)
        num_blocks = min(int(budget // per_block), cap)
        if num_blocks < -(-self.max_model_len // block_size):
            raise RuntimeError(f"only {num_blocks} KV-cache blocks fit in memory, fewer than one sequence of "
                               f"max_model_len={self.max_model_len} tokens needs; lower max_model_len, raise "
                               "memory_fraction or pass num_blocks")
        return num_blocks

    # ---- generate -----------------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams], *,
                 hook: Hook | None = None, use_tqdm: bool = False) -> Generation:
        """Generate every prompt's `params.n` samples (and the hook's branches) -> their outputs and this call's
        counters."""
        params = self._check_requests(prompts, params)
        errors = [self._prompt_error(p, f"prompt {i}") for i, p in enumerate(prompts)]
        groups = [self._add_request(i, prompt, sp) if err is None else []
                  for i, (prompt, sp, err) in enumerate(zip(prompts, params, errors))]
        stats = GenerationStats()
        bar = None
        if use_tqdm:
            from tqdm import tqdm
            bar = tqdm(total=sum(len(g) for g in groups), desc="generate")
        while self.scheduler.has_unfinished():
            finished = self.step(hook, stats)
            if bar is not None:
                bar.update(sum(1 for s in finished if not s.is_branch))
        if bar is not None:
            bar.close()
        outputs = [RequestOutput(list(prompt), [self._completion(s) for s in group], error=err)
                   for prompt, group, err in zip(prompts, groups, errors)]
        return Generation(outputs, stats)

    def step(self, hook: Hook | None, stats: GenerationStats) -> list[Sequence]:
        """One engine step, counted into stats; returns the sequences that finished in it."""
        batch = self._schedule()
        logits, ready = self._run(batch, stats)
        if not ready:
            return []
        seqs, logits = self._join_siblings(ready, logits, stats)
        self._sample(seqs, logits, stats)
        done = self._stopped(seqs)
        self._call_hook(hook, seqs, stats)
        self._finish(done)
        return done

    # ---- the parts of a step ------------------------------------------------------------------------------------
    def _schedule(self) -> ScheduledBatch:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            raise RuntimeError("the scheduler made no progress (a bug: a sequence can neither run nor wait)")
        return batch

    def _run(self, batch: ScheduledBatch, stats: GenerationStats) -> tuple[torch.Tensor | None, list[Sequence]]:
        """Run the model on the batch and mark its tokens computed -> (logits (S, V), the S sequences to sample)."""
        self.runner.ensure_blocks(self.block_manager.num_touched_blocks)   # a growing pool follows the blocks used
        logits, which = self.runner.run(batch)
        self.block_manager.copies_done()         # the copies ran before the forward: their sources may be reused
        stats.steps += 1
        stats.preemptions += batch.num_preempted
        stats.cow_copies += len(batch.copies)
        stats.tokens_computed += batch.total_tokens
        for seq, n in zip(batch.seqs, batch.num_tokens):
            self._mark_computed(seq, n, stats)
        return logits, [batch.seqs[i] for i in which]

    def _mark_computed(self, seq: Sequence, n: int, stats: GenerationStats) -> None:
        """seq's next n tokens have their K/V now: count them, advance, register the blocks they filled."""
        self._count_computed(seq, n, stats)
        seq.num_computed_tokens += n
        seq.max_computed = max(seq.max_computed, seq.num_computed_tokens)
        self.block_manager.register_full_blocks(seq)

    def _join_siblings(self, ready: list[Sequence], logits: torch.Tensor,
                       stats: GenerationStats) -> tuple[list[Sequence], torch.Tensor]:
        """Samples 1..n-1 of a prompt (branches 1..m-1 of a fork) join their leader once its tokens are computed:
        they share all its blocks and sample from its logits row -> (the sequences to sample, their logits)."""
        seqs, rows = [], []
        for r, seq in enumerate(ready):
            seqs.append(seq)
            rows.append(r)
            for sib in seq.siblings:
                self._share_blocks(seq, sib, len(sib), stats)
                seqs.append(sib)
                rows.append(r)
            seq.siblings = []
        if len(rows) != len(ready):
            logits = logits.index_select(0, torch.tensor(rows, dtype=torch.int64, device=logits.device))
        return seqs, logits

    def _share_blocks(self, src: Sequence, seq: Sequence, n: int, stats: GenerationStats) -> None:
        """seq (a sibling or a fork) starts running on src's blocks of its first n tokens, counted as cached."""
        self.block_manager.fork(src, seq, n)
        seq.admitted = seq.admitted_counted = True
        seq.num_cached_tokens = seq.max_computed = n
        stats.count_cached(seq.is_branch, n)
        self.scheduler.add_running(seq)

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor, stats: GenerationStats) -> None:
        """Draw each sequence's next token from its logits row and append it with its log-prob."""
        tokens, logprobs = sample(logits, [s.params.temperature for s in seqs], [s.params.top_p for s in seqs],
                                  [s.params.top_k for s in seqs], [s.draw_key() for s in seqs],
                                  self.sampler_buffers)
        for seq, tok, lp in zip(seqs, tokens.tolist(), logprobs.tolist()):
            seq.append_token(tok, lp)
            seq.num_new_tokens = 1
            stats.count_sampled(seq.is_branch)

    def _stopped(self, seqs: list[Sequence]) -> list[Sequence]:
        """The sequences whose last token stops them, with their finish_reason set."""
        done = []
        for seq in seqs:
            reason = self._stop_reason(seq)
            if reason is not None:
                seq.finish_reason = reason
                done.append(seq)
        return done

    def _call_hook(self, hook: Hook | None, seqs: list[Sequence], stats: GenerationStats) -> None:
        """Show the hook each non-branch sequence that just sampled (finishing ones too) and fork what it asks.

        The view copies nothing (SequenceView.of); its new tokens are those since the hook last saw the sequence. A
        hook with `wake_at(view) -> int | None` says, after each call, from which output length it next needs to see
        that sequence (None: every step); until then the sequence is shown only at its last step."""
        if hook is None:
            return
        wake_at = getattr(hook, "wake_at", None)
        for seq in seqs:
            if seq.is_branch:
                continue
            n_out = len(seq.token_ids) - seq.num_prompt_tokens
            if n_out < seq.hook_wake and seq.finish_reason is None:
                continue
            view = SequenceView.of(seq, n_out - seq.hook_seen)
            seq.hook_seen = n_out
            for fork in hook(view) or ():
                self._fork(seq, fork, stats)
            if wake_at is not None:
                seq.hook_wake = wake_at(view) or 0

    def _finish(self, done: list[Sequence]) -> None:
        for seq in done:
            self.scheduler.finish(seq, seq.finish_reason)

    def _fork(self, parent: Sequence, req: ForkRequest, stats: GenerationStats) -> None:
        """`req.params.n` branches of parent at req.position: one leader computes the continuation, the other n-1
        join it when it is computed and draw their first token from the same logits (as the n samples of a prompt
        do), so the continuation is computed once."""
        position = len(parent) if req.position is None else req.position
        if not (isinstance(position, numbers.Integral) and 1 <= position <= len(parent)):
            error = f"fork position {position} outside 1..{len(parent)} (the parent's tokens)"
        else:
            tokens = parent.token_ids[:position] + list(req.continuation_token_ids)
            error = self._prompt_error(tokens, "a branch (prefix + continuation)")
        if error is not None:         # this fork fails alone: an output saying why, nothing scheduled
            parent.branches.append(_FailedBranch(BranchOrigin(parent, position, list(req.continuation_token_ids),
                                                              req.tag), req.params, error))
            return
        # Share what is computed, but leave the last token uncomputed: its logits give the first branch token.
        shared = min(position, parent.num_computed_tokens, len(tokens) - 1)
        origin = BranchOrigin(parent, position, list(req.continuation_token_ids), req.tag)
        children = [Sequence(list(tokens), req.params, request_index=parent.request_index, sample_index=k,
                             branch=origin) for k in range(req.params.n)]
        children[0].siblings = children[1:]
        parent.branches.extend(children)
        stats.branches += len(children)
        self._share_blocks(parent, children[0], shared, stats)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _check_requests(self, prompts: list[list[int]],
                        params: SamplingParams | list[SamplingParams]) -> list[SamplingParams]:
        """One SamplingParams per prompt; raises before any work on a missing tokenizer (a bad prompt fails alone:
        `_prompt_error`)."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")
        if any(sp.stop_strings for sp in params):
            self._require_tokenizer("stop strings")      # fail before any work, not at the first sampled token
        return params

    def _add_request(self, index: int, prompt: list[int], params: SamplingParams) -> list[Sequence]:
        """The request's n samples; sample 0 waits for admission, 1..n-1 join it when its prompt is computed."""
        group = [Sequence(list(prompt), params, request_index=index, sample_index=j) for j in range(params.n)]
        group[0].siblings = group[1:]
        self.scheduler.add(group[0])
        return group

    @property
    def max_seq_len(self) -> int:
        """The longest sequence the engine can hold: max_model_len, or the whole KV cache if that is smaller."""
        bm = self.block_manager
        return min(self.max_model_len, bm.num_blocks * bm.block_size)

    def _prompt_error(self, tokens, what: str) -> str | None:
        """Why tokens cannot start a sequence (empty, ids outside the vocabulary, no room for one output token in
        the context or in the whole KV cache), or None."""
        try:
            tokens = list(tokens)
        except TypeError:
            return f"{what} is not a list of token ids ({type(tokens).__name__})"
        if len(tokens) == 0:
            return f"{what} is empty"
        if not all(isinstance(t, numbers.Integral) for t in tokens):
            bad = next(t for t in tokens if not isinstance(t, numbers.Integral))
            return f"{what} has a token id that is not an integer ({bad!r})"
        v = self.config.vocab_size
        if min(tokens) < 0 or max(tokens) >= v:
            bad = next(t for t in tokens if not 0 <= t < v)
            return f"{what} has token id {bad}, outside the vocabulary [0, {v})"
        if len(tokens) >= self.max_model_len:
            return (f"{what} has {len(tokens)} tokens; the engine's max_model_len (at most the model's context) is "
                    f"{self.max_model_len} tokens, so at most {self.max_model_len - 1} leave room to generate")
        bm = self.block_manager
        if len(tokens) >= bm.num_blocks * bm.block_size:
            return (f"{what} has {len(tokens)} tokens; the whole KV cache holds {bm.num_blocks} blocks of "
                    f"{bm.block_size} = {bm.num_blocks * bm.block_size} tokens, so at most "
                    f"{bm.num_blocks * bm.block_size - 1} leave room to generate (raise num_blocks)")
        return None

    def _check_prompt(self, tokens: list[int], what: str) -> None:
        error = self._prompt_error(tokens, what)
        if error is not None:
            raise ValueError(error)

    def _count_computed(self, seq: Sequence, n: int, stats: GenerationStats) -> None:
        """Split the n tokens computed for seq into first-time prompt tokens, recomputed ones and decode tokens; on
        its first step after admission, count the prompt tokens the prefix cache served it."""
        c = seq.num_computed_tokens
        recomputed = max(0, min(c + n, seq.max_computed) - c)
        prompt = max(0, min(c + n, seq.num_prompt_tokens) - max(c, seq.max_computed))
        stats.recomputed_tokens += recomputed
        stats.prompt_tokens_computed += prompt
        if seq.is_branch:
            stats.branch_prompt_tokens_computed += prompt
        if not seq.admitted_counted:
            seq.admitted_counted = True
            stats.count_cached(seq.is_branch, seq.num_cached_tokens)

    def _stop_reason(self, seq: Sequence) -> str | None:
        sp = seq.params
        tok = seq.token_ids[-1]
        stop_ids = self.config.eos_token_ids if sp.stop_token_ids is None else sp.stop_token_ids
        if stop_ids and tok in stop_ids:
            return "stop"
        if sp.stop_strings:
            # Only the tail can hold a new match: the longest stop string spans at most that many tokens (+ slack for
            # tokens that decode to partial characters).
            longest = max(len(s) for s in sp.stop_strings)
            out = seq.output_token_ids
            tail_start = max(0, len(out) - longest - 4)
            tail = self._decode(out[tail_start:], "stop strings")
            if any(s in tail for s in sp.stop_strings):
                return "stop"
        if seq.num_output_tokens >= sp.max_tokens or len(seq) >= self.max_seq_len:
            return "length"
        return None

    def _require_tokenizer(self, what: str):
        return _require_tokenizer(self.tokenizer, what)

    def _decode(self, token_ids: list[int], what: str) -> str:
        return self._require_tokenizer(what).decode(token_ids, skip_special_tokens=True)

    def _lazy_text(self, seq: Sequence) -> _Text:
        # The tokenizer, not the engine: an output must not keep the engine's KV cache alive.
        return _Text(functools.partial(_output_text, self.tokenizer, seq.output_token_ids, seq.finish_reason,
                                       seq.params.stop_strings))

    def _completion(self, seq: Sequence) -> CompletionOutput:
        """seq's output, its log-probs as one float32 tensor (made here, once: the sequence keeps floats per step)."""
        branches = [BranchOutput(b.branch.tag, b.branch.position, b.branch.continuation_token_ids,
                                 b.output_token_ids, _logprobs(b), b.finish_reason, self._lazy_text(b),
                                 error=getattr(b, "error", None))
                    for b in seq.branches]
        return CompletionOutput(seq.sample_index, seq.output_token_ids, _logprobs(seq), seq.finish_reason,
                                seq.num_cached_tokens, branches, self._lazy_text(seq))


class _FailedBranch:
    """A fork that could not start (Engine._fork): it keeps its place among its parent's branches, with no tokens."""

    def __init__(self, origin: BranchOrigin, params: SamplingParams, error: str):
        self.branch, self.params, self.error = origin, params, error
        self.output_token_ids, self.logprobs, self.finish_reason = [], [], "error"


def _logprobs(seq: Sequence) -> torch.Tensor:
    return torch.tensor(seq.logprobs, dtype=torch.float32)


def _require_tokenizer(tokenizer, what: str):
    """The tokenizer (loaded now if lazy); a clear error naming `what` needed it when there is none."""
    from mrt.models import LazyTokenizer, MissingTokenizerError
    if tokenizer is None:
        raise MissingTokenizerError(f"{what} need a tokenizer, and this engine has none: pass one "
                                    "(Engine(model, tokenizer)), or generate from token ids and read token_ids")
    # A LazyTokenizer loads now, or raises saying why (its folder has no tokenizer files).
    return tokenizer.load() if isinstance(tokenizer, LazyTokenizer) else tokenizer


def _output_text(tokenizer, token_ids: list[int], finish_reason: str, stop_strings: list[str] | None) -> str:
    """An output's text: its tokens decoded, cut before the first stop string when one stopped it."""
    text = _require_tokenizer(tokenizer, "output texts").decode(token_ids, skip_special_tokens=True)
    if finish_reason == "stop" and stop_strings:
        cut = [text.find(s) for s in stop_strings if s in text]
        if cut:
            text = text[:min(cut)]
    return text
