"""A model runner that prices each engine step instead of computing it.

It stands where `mrt.rollout.runner.ModelRunner` stands: the engine's real scheduler and block manager plan a step
(`ScheduledBatch`: sequences, token counts, copy-on-write copies), and `run(batch)` returns what the real runner
returns (the batch rows to sample, with an empty logits tensor) while adding the step's price to its parts:
- a scheduled sequence's tokens at positions >= max(prompt length, most ever computed) are decode tokens (sampled one
  by one); the rest are a prefill chunk; a chunk's tokens below `max_computed` are recomputed after a preemption;
- parts: `rollout_prefill` / `rollout_decode` (the traces), `meta_prefill` / `meta_decode` (branches: termination
  text, answers, and in the no-sharing variant each branch's whole prefix), `recompute` (preempted tokens again);
- `meta_prefix_kv_*`: the K/V of the parent's prefix (tokens before the fork point) that branches read, counted
  inside meta_prefill / meta_decode and reported apart; with `cascade=True` a fork group's decode reads that prefix
  once per step for all its branches (a shared-prefix decode attention), the rest of each branch's context alone.

Host time of the meta-prover's hook (`hook=True`): `hook_seq_s` per trace shown to it (one that sampled and whose
hook still needs every step: `seq.hook_wake == 0`; a trace whose segmenter can give no boundary any more, or a
fixed segmenter's between chunk ends, is not shown, mrt.rollout.engine `_call_hook`), plus `hook_len_s` per token of
its sequence. The engine's view copies nothing and the hook reads only the new tokens, so the profiles' `hook_len_s`
is 0; it stays for pricing a hook that copies its trace every step (O(length) per step, O(length^2) a trace: the
engine before its views stopped copying cost ~3 ns a token there, seconds of Python per rank at 24k-token traces).

CUDA graphs (`cuda_graphs=True`, GPU profiles; mrt/rollout/cuda_graphs.py): a step where every sequence has exactly
one new token replays a captured graph, GRAPH_STEP_LAUNCHES launches instead of a forward's; any prefill (a prompt,
a fork's continuation, a recompute) makes the step eager.

Coarsened steps (`coarsen` k > 1; see mrt/plan/sim_engine.py): a sequence then arrives with up to k decode tokens
sampled at once; they are priced as k consecutive decode steps (sub-step j has the rows of every sequence with more
than j decode tokens, and streams the weights again), so the FLOPs, weight and K/V bytes, launches and host
time of the k steps are all counted; only the batching of the k steps is fixed at the first one's.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .costs import (Part, attention_op, head_op, launches_per_forward, linear_op, prefill_kv_reads)
from .profiles import DeviceProfile
from .shape import ModelShape

# A graph-replayed decode step: one graph launch, the sampler's ops and the input copies stay outside the graph.
GRAPH_STEP_LAUNCHES = 16
ROLLOUT_PARTS = ("rollout_prefill", "rollout_decode", "meta_prefill", "meta_decode", "recompute")


class PricingRunner:
    def __init__(self, shape: ModelShape, profile: DeviceProfile, *, cascade: bool = False, hook: bool = False,
                 cuda_graphs: bool = False):
        self.shape = shape
        self.profile = profile
        self.cascade = cascade
        self.hook = hook                 # the meta-prover's hook sees every trace that sampled (host time)
        self.on_gpu = profile.name != "cpu"
        self.cuda_graphs = cuda_graphs and self.on_gpu
        self.graph_steps = 0
        self.hook_seconds = 0.0          # the meta-prover hook's host time (inside the parts' launch seconds)
        self.parts = {k: Part() for k in ROLLOUT_PARTS}
        self.prefix_kv_reads = 0.0       # keys of parents' prefixes read by branches (after any cascade saving)
        self.cascade_saved_reads = 0.0
        self.forwards = 0                # priced forwards (sub-steps)
        self.num_blocks = None

    def ensure_blocks(self, n: int) -> None:
        """The real runner grows its pool here; a priced one has none."""

    # ---- one step -----------------------------------------------------------------------------------------------
    def run(self, batch) -> tuple[torch.Tensor, list[int]]:
        pre_rows, pre_sampled = defaultdict(float), defaultdict(float)
        decodes: list[tuple[str, int]] = []
        self._dec = []                   # decode tokens of each scheduled sequence, in batch order
        hook_len = 0                     # tokens of the traces shown to the hook (a copying hook's cost)
        self._hooked = []                # decode tokens of each trace shown to the hook, max(d, 1)
        pairs, reads = defaultdict(float), defaultdict(float)
        groups: dict[int, tuple[int, list[int]]] = {}
        which = []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
            c, P = seq.num_computed_tokens, seq.num_prompt_tokens
            start = max(c, P, seq.max_computed)
            d = max(0, c + n - start)
            p = n - d
            self._dec.append(d)
            branch = seq.branch
            ready = c + n == len(seq)
            if ready:
                which.append(i)
                if branch is None and not seq.hook_wake:
                    hook_len += max(d, 1) * len(seq)
                    self._hooked.append(max(d, 1))
            if p:
                rec = max(0, min(c + p, seq.max_computed) - c)
                kind = "recompute" if rec * 2 > p else ("meta_prefill" if branch else "rollout_prefill")
                pre_rows[kind] += p
                if ready and not d:
                    pre_sampled[kind] += 1
                pairs[kind] += p * c + p * (p + 1) / 2
                kv = prefill_kv_reads(c, p, self.on_gpu)
                reads[kind] += kv
                if branch is not None:
                    self.prefix_kv_reads += kv * min(branch.position, c + p) / (c + p)
            if d:
                kind = "meta_decode" if branch else "rollout_decode"
                decodes.append((kind, d))
                q = d * start + d * (d + 1) / 2          # each decode query reads its whole context
                pairs[kind] += q
                reads[kind] += q
                if branch is not None:
                    self.prefix_kv_reads += d * branch.position
                    if self.cascade:
                        groups.setdefault(id(branch), (branch.position, []))[1].append(d)
        if groups:
            saved = sum(prefix * _shared_reads(ds) for prefix, ds in groups.values())
            reads["meta_decode"] -= saved
            self.prefix_kv_reads -= saved
            self.cascade_saved_reads += saved
        self._price(batch, pre_rows, pre_sampled, decodes, pairs, reads, hook_len if self.hook else 0)
        return torch.empty((len(which), 0)), which

    def _price(self, batch, pre_rows, pre_sampled, decodes, pairs, reads, hook_len) -> None:
        shape, prof = self.shape, self.profile
        steps = max([d for _, d in decodes], default=0) or 1
        attn_s = {}
        for kind in pairs:
            attn_s[kind] = attention_op(self.parts[kind], shape, prof, pairs[kind], reads[kind])
        attn_per_step = sum(attn_s.values()) / steps
        eager = launches_per_forward(shape, prof) * prof.launch_s
        graph = GRAPH_STEP_LAUNCHES * prof.launch_s
        # With CUDA graphs only pure decode steps replay a graph. A coarsened step's prefills would have fallen on
        # separate engine steps, spread over its k: the first min(k, prefilling sequences) sub-steps run eagerly.
        prefilling = sum(1 for n, d in zip(batch.num_tokens, self._dec) if n > d)
        eager_steps = min(steps, prefilling) if self.cuda_graphs else steps
        for j in range(steps):
            launch = eager if j < eager_steps else graph
            self.graph_steps += j >= eager_steps
            rows, sampled = defaultdict(float), defaultdict(float)
            if j == 0:
                for k, v in pre_rows.items():
                    rows[k] += v
                for k, v in pre_sampled.items():
                    sampled[k] += v
            num_seqs = len(batch.seqs) if j == 0 else 0
            for kind, d in decodes:
                if d > j:
                    rows[kind] += 1
                    sampled[kind] += 1
                    num_seqs += j > 0
            hooked = sum(1 for d in self._hooked if d > j) if self.hook else 0
            total_rows, total_sampled = sum(rows.values()), sum(sampled.values())
            device = attn_per_step
            for kind, r in rows.items():
                device += linear_op(self.parts[kind], shape, prof, r, weight_share=r / total_rows)
            for kind, s in sampled.items():
                if s:
                    device += head_op(self.parts[kind], shape, prof, s, weight_share=s / total_sampled)
            hook_s = prof.hook_seq_s * hooked + prof.hook_len_s * hook_len / steps
            self.hook_seconds += hook_s
            host = prof.host_step_s + prof.host_seq_s * num_seqs + hook_s
            overhead = (max(0.0, launch - device) if self.on_gpu else launch) + host
            for kind, r in rows.items():
                self.parts[kind].launch_s += overhead * r / total_rows
            self.forwards += 1


def _shared_reads(ds: list[int]) -> int:
    """Prefix reads a cascade saves for a fork group whose members decode ds tokens this step: at sub-step j,
    count_j members read the prefix; a shared-prefix kernel reads it once."""
    return sum(max(0, sum(1 for d in ds if d > j) - 1) for j in range(max(ds)))
