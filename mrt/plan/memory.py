"""Memory of one rank: what the trainer holds on each GPU, and the KV cache the engine gets from what is left.

In the trainer's order (mrt/trainer.py): the training model (FSDP2 shards it over the ranks: 1/N of it each), the
generation copy (FSDP2 only: a whole unsharded model the engine runs on), the frozen reference model (kl_coef > 0),
then the engine takes `rollout.memory_fraction` of the memory free at that moment for its KV cache (or
`rollout.num_blocks` blocks). What is left must hold, at the first update, AdamW's two states and the gradients
(both in the parameters' dtype, sharded like them), the activations of one micro-batch of `optim.micro_batch_tokens`
tokens, and FSDP2's gathered layers.

Activations per token and layer kept for the backward (elements, the decoder of mrt/models):
    5*d (norm inputs/outputs, residual) + 2*H*D (q, attention output) + 2*Hkv*D (k, v) + 4*I (gate, up, silu, product)
With gradient checkpointing only each layer's input (d per token and layer) is kept, plus one layer's full set while
it is recomputed. The fused log-prob op holds a (chunk x vocab tile) block, not (N, V) logits: counted as the
gradient of the hidden states, N*d.
KV cache: per block, layers * 2 * block_size * Hkv * D * element size (mrt.rollout.runner.kv_cache_bytes_per_block).
On the CPU the engine sizes it from available RAM (memory_fraction of it, 0.25 by default there) and grows it on
demand; here physical RAM stands in for available RAM.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .profiles import DeviceProfile
from .shape import ModelShape

FSDP_MIN_PARAMS = 500_000_000      # mrt.distributed.wrap_model's auto rule: FSDP2 on GPUs at or above this


@dataclass
class MemoryPlan:
    strategy: str                     # none | ddp | fsdp
    weights: float
    gradients: float
    optimizer: float
    generation_copy: float
    reference_model: float
    activations: float                # one micro-batch, as configured (checkpointing on or off)
    activations_checkpointed: float
    activations_full: float
    fsdp_gathered: float
    kv_cache: float
    kv_blocks: int
    kv_tokens: int
    seq_tokens: int                   # one sequence of the run's length: mean prompt + max_new_tokens
    max_concurrent_seqs: int
    total: float
    capacity: float
    fits: bool

    def to_dict(self) -> dict:
        return asdict(self)


def strategy_for(cfg, shape: ModelShape, gpus: int, on_gpu: bool) -> str:
    """The trainer's choice (mrt.distributed.wrap_model): no wrapper on one process, else DDP or FSDP2."""
    if gpus <= 1:
        return "none"
    s = cfg.distributed.strategy
    if s == "auto":
        return "fsdp" if on_gpu and shape.params >= FSDP_MIN_PARAMS else "ddp"
    return s


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool) -> float:
    d, H, Hkv, D, I, b = shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.intermediate, \
        shape.dtype_bytes
    per_token_layer = (5 * d + 2 * H * D + 2 * Hkv * D + 4 * I) * b + H * 4     # + fp32 log-sum-exp per head
    grad_hidden = tokens * d * b
    if checkpointing:
        return tokens * (shape.layers * d * b + per_token_layer) + grad_hidden
    return tokens * shape.layers * per_token_layer + grad_hidden


def plan_memory(cfg, shape: ModelShape, profile: DeviceProfile, gpus: int, prompt_tokens: float) -> MemoryPlan:
    on_gpu = profile.name != "cpu"
    strategy = strategy_for(cfg, shape, gpus, on_gpu)
    shard = gpus if strategy == "fsdp" else 1
    W = shape.weights_bytes
    weights = W / shard
    gen_copy = W if strategy == "fsdp" else 0.0
    ref = W if cfg.rl.kl_coef > 0 else 0.0
    grads, optim = W / shard, 2 * W / shard
    T = cfg.optim.micro_batch_tokens
    act_ck, act_full = activation_bytes(shape, T, True), activation_bytes(shape, T, False)
    act = act_ck if cfg.model.gradient_checkpointing else act_full
    per_layer = (shape.layer_matmul_params + shape.layer_other_params) * shape.dtype_bytes
    gathered = 2 * per_layer if strategy == "fsdp" else 0.0       # the layer running and the one prefetched
    r = cfg.rollout
    per_block = shape.kv_bytes_per_token * r.block_size
    free = profile.memory_bytes - profile.context_bytes - weights - gen_copy - ref
    if r.num_blocks is not None:
        blocks = r.num_blocks
    else:
        frac = r.memory_fraction
        blocks = int(max(free, 0) * frac // per_block)
        if not on_gpu:      # the CPU engine caps the pool at max_num_seqs sequences of the model's context
            blocks = min(blocks, r.max_num_seqs * -(-shape.context // r.block_size))
    kv = blocks * per_block
    seq_tokens = int(round(prompt_tokens)) + r.max_new_tokens
    max_seqs = min(blocks * r.block_size // max(seq_tokens, 1), r.max_num_seqs)
    total = weights + gen_copy + ref + kv + grads + optim + act + gathered
    capacity = profile.memory_bytes - profile.context_bytes
    return MemoryPlan(strategy, weights, grads, optim, gen_copy, ref, act, act_ck, act_full, gathered, kv, blocks,
                      blocks * r.block_size, seq_tokens, max_seqs, total, capacity, total <= capacity)
