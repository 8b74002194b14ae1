"""One training step of one rank, priced: the rollout simulated on the engine's scheduler, the update and optimizer
priced from the packed micro-batches the trainer would build.

Rollout: `SimEngine` on this rank's share of the prompts (ceil(B / gpus) prompts x G traces), with the KV cache the
memory plan gives, three ways for an MRT config: as configured, without prefix sharing (every branch prefills its
prefix), and with a shared-prefix ("cascade") decode attention for fork groups. GRPO runs the same traces without the
meta-prover. Ranks run in parallel; the slowest rank sets the step, and one simulated rank stands for all (with
long-tailed trace lengths another rank can be slower: the figures are a typical rank's, not the maximum of 8).

Update (mrt.update, mrt.rollout_batch.micro_batches): the traces packed into micro-batches of at most
`optim.micro_batch_tokens` tokens (the trainer's own grouping, `_budget_groups`); per micro-batch of N tokens in
sequences of lengths L_i:
    forward  = layers' products on N rows + causal attention over sum L_i (L_i + 1) / 2 pairs + the fused log-prob
               op (2*d*V FLOPs per token, the V x d weight once per 4096-token chunk)
    backward = twice the forward's FLOPs and bytes; gradient checkpointing adds the layers' forward once more
    old log-probs (rl.recompute_old_logp): one more forward, no grad
FSDP2 all-gathers the parameters for each micro-batch's forward and backward and reduce-scatters the gradients
(3 x weights x (N-1)/N bytes over the interconnect), overlapped with the compute: only the excess counts. DDP
all-reduces the gradients once (2 x weights x (N-1)/N), half of it assumed hidden behind the last backward.
Optimizer: AdamW reads parameters, gradients and both states and writes three of them back (+ the gradient norm's
read): 8 x weights / shard bytes, and per parameter tensor OPTIMIZER_LAUNCHES_PER_TENSOR ops (foreach on a GPU:
a few launches per 512 tensors).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..rollout_batch import _budget_groups
from .costs import Part, attention_op, head_op, launches_per_forward, linear_op, prefill_kv_reads
from .memory import MemoryPlan
from .pricing_runner import ROLLOUT_PARTS, PricingRunner
from .profiles import DeviceProfile
from .shape import ModelShape
from .sim_engine import SimEngine
from .workload import Workload

UPDATE_PARTS = ("update_forward_backward", "old_logp_forward", "communication", "optimizer")
LOGPROB_CHUNK = 4096
OPTIMIZER_LAUNCHES_PER_TENSOR = 12      # CPU: per-tensor AdamW ops (mul, lerp, addcmul, sqrt, div, ...) and the norm
VARIANTS = ("default", "no_prefix_sharing", "cascade")


@dataclass
class RolloutPlan:
    parts: dict[str, Part]
    stats: dict
    prefix_kv_bytes: float
    cascade_saved_bytes: float
    forwards: int
    sim_seconds: float
    coarsen: int
    graph_steps: int = 0
    hook_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts.values())


@dataclass
class StepPlan:
    rollout: RolloutPlan
    update: dict[str, Part]
    extra: dict = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, Part]:
        return {**self.rollout.parts, **self.update}

    @property
    def seconds(self) -> float:
        return self.rollout.seconds + sum(p.seconds for p in self.update.values())

    def seconds_by_part(self) -> dict[str, float]:
        out = {k: p.seconds for k, p in self.parts.items()}
        out["rollout"] = self.rollout.seconds
        out["update"] = sum(p.seconds for p in self.update.values())
        out["total"] = self.seconds
        return out


def engine_has_cuda_graphs() -> bool:
    """Whether this checkout's engine replays decode steps as CUDA graphs on a GPU (mrt/rollout/cuda_graphs.py)."""
    import importlib.util
    return importlib.util.find_spec("mrt.rollout.cuda_graphs") is not None


def auto_coarsen(max_new_tokens: int) -> int:
    """Decode tokens per simulated step: 1 up to 1k-token traces, then one per 1k tokens of budget, at most 16 (a
    paper-shape rank, 24k-token traces, then runs ~1.5k scheduler steps: seconds here)."""
    return max(1, min(16, max_new_tokens // 1024))


def blocks_needed(cfg, workload: Workload, meta: bool) -> int:
    """Blocks that hold every sequence of the workload at once, branches included, each with its whole prefix (the
    no-sharing case): a KV cache at least this large never preempts or evicts a live block, so the simulation caps
    its block manager there (a 40 GB cache is millions of blocks: Python objects the run would never touch)."""
    bs = cfg.rollout.block_size
    n = sum(-(-(t.prompt + t.completion + 1) // bs) for t in workload.traces)
    if meta:
        m, a, tt = cfg.meta_prover.m, int(workload.answer_tokens) + 1, workload.termination_tokens
        for g in workload.groups:
            forks = [0] * bool(cfg.meta_prover.prompt_branches) + [b for t in g for b in t.boundaries]
            n += m * sum(-(-(g[0].prompt + b + tt + a) // bs) + 1 for b in forks)
    return n + 16


def simulate_rollout(cfg, shape: ModelShape, profile: DeviceProfile, workload: Workload, mem: MemoryPlan, *,
                     meta: bool, variant: str = "default", coarsen: int = 1, seed: int = 0,
                     cuda_graphs: bool | None = None) -> RolloutPlan:
    r = cfg.rollout
    graphs = engine_has_cuda_graphs() if cuda_graphs is None else cuda_graphs
    runner = PricingRunner(shape, profile, cascade=variant == "cascade", hook=meta, cuda_graphs=graphs)
    eng = SimEngine(runner, num_blocks=min(mem.kv_blocks, blocks_needed(cfg, workload, meta)), block_size=r.block_size, max_num_seqs=r.max_num_seqs,
                    max_num_batched_tokens=r.max_num_batched_tokens, enable_prefix_caching=r.enable_prefix_caching,
                    max_model_len=shape.context, coarsen=coarsen, share_forks=variant != "no_prefix_sharing",
                    seed=seed)
    t0 = time.perf_counter()
    stats = eng.simulate(workload, max_new_tokens=r.max_new_tokens, meta=cfg.meta_prover if meta else None,
                         episodes=cfg.episodes if meta else None)
    kvb = shape.kv_bytes_per_token
    return RolloutPlan(runner.parts, stats.as_dict(), runner.prefix_kv_reads * kvb, runner.cascade_saved_reads * kvb,
                       runner.forwards, time.perf_counter() - t0, coarsen, runner.graph_steps, runner.hook_seconds)


def price_update(cfg, shape: ModelShape, profile: DeviceProfile, workload: Workload, mem: MemoryPlan,
                 gpus: int) -> dict[str, Part]:
    parts = {k: Part() for k in UPDATE_PARTS}
    on_gpu = profile.name != "cpu"
    lens = [t.prompt + t.completion for t in workload.traces]
    launch = launches_per_forward(shape, profile) * profile.launch_s
    fb, old = parts["update_forward_backward"], parts["old_logp_forward"]
    W = shape.weights_bytes
    comm_bytes = 0.0
    if mem.strategy == "fsdp":
        comm_bytes = 3 * W * (gpus - 1) / gpus
    first = 0
    for count in _budget_groups(lens, cfg.optim.micro_batch_tokens):
        seqs = lens[first:first + count]
        first += count
        N = sum(seqs)
        pairs = sum(L * (L + 1) / 2 for L in seqs)
        reads = sum(prefill_kv_reads(0, L, on_gpu) for L in seqs)
        chunks = -(-N // LOGPROB_CHUNK)
        passes = 3 + (1 if cfg.model.gradient_checkpointing else 0)     # forward, backward (2x), recompute
        t_fb = 0.0
        for _ in range(passes):
            t_fb += linear_op(fb, shape, profile, N) + attention_op(fb, shape, profile, pairs, reads)
        for _ in range(3):                          # the fused log-prob op: forward, backward's recompute and grads
            t_fb += head_op(fb, shape, profile, N, weight_share=chunks, sampler=False)
        fb.launch_s += passes * launch
        if cfg.rl.recompute_old_logp:
            linear_op(old, shape, profile, N)
            attention_op(old, shape, profile, pairs, reads)
            head_op(old, shape, profile, N, weight_share=chunks, sampler=False)
            old.launch_s += launch
        if comm_bytes and profile.interconnect:
            parts["communication"].memory_s += max(0.0, comm_bytes / profile.interconnect - t_fb)
            parts["communication"].bytes += comm_bytes
    if mem.strategy == "ddp" and profile.interconnect:
        ar = 2 * W * (gpus - 1) / gpus
        parts["communication"].bytes += ar
        parts["communication"].memory_s += 0.5 * ar / profile.interconnect
    shard = gpus if mem.strategy == "fsdp" else 1
    opt = parts["optimizer"]
    opt.add_op(0.0, 8 * W / shard, profile, shape.dtype_bytes)
    tensors = shape.layers * (9 + (3 if shape.qkv_bias else 0)) + 3
    per_tensor = OPTIMIZER_LAUNCHES_PER_TENSOR if not on_gpu else OPTIMIZER_LAUNCHES_PER_TENSOR / 64
    opt.launch_s += tensors * per_tensor * profile.launch_s
    return parts


def plan_step(cfg, shape: ModelShape, profile: DeviceProfile, workload: Workload, mem: MemoryPlan, gpus: int, *,
              meta: bool, variant: str = "default", coarsen: int = 1, seed: int = 0,
              cuda_graphs: bool | None = None) -> StepPlan:
    rollout = simulate_rollout(cfg, shape, profile, workload, mem, meta=meta, variant=variant, coarsen=coarsen,
                               seed=seed, cuda_graphs=cuda_graphs)
    return StepPlan(rollout, price_update(cfg, shape, profile, workload, mem, gpus))


__all__ = ["ROLLOUT_PARTS", "UPDATE_PARTS", "VARIANTS", "StepPlan", "RolloutPlan", "plan_step", "simulate_rollout",
           "price_update", "auto_coarsen"]
