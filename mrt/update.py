"""The policy update of one step: optimizer, learning-rate schedule, and the loss over packed micro-batches.

Per micro-batch (traces packed without padding, at most `micro_batch_tokens` tokens):
    hidden = model(ids, positions, PackedMetadata)                       # (N, d), no (N, V) logits
    logp, entropy = fused_linear_logprobs(hidden, lm_head_weight, targets, temperature=T, return_entropy=True)
    loss = mrt.loss.policy_loss(logp, old_logp, advantages, mask, ...)  # normalised by the WHOLE batch's counts
    loss.backward()                                                      # gradients accumulate
then clip the gradient norm (`run_update`); the trainer takes the optimizer step once every rank found its loss and
gradient norm finite (`run_update`'s `finite`). With several ranks the counts are the global ones and the
loss is multiplied by the world size, so DDP's gradient mean is the gradient of the global batch loss.
A non-finite loss or gradient norm skips the optimizer step (gradients dropped); the trainer counts such steps.

Precision: the training forward runs in the model's own dtype, as the rollout engine does (no autocast), so the old
(engine) and new (training) log-probs differ only by the two paths' kernels. `rl.recompute_old_logp` removes even
that: `recompute_old_logp` takes the old log-probs from the training forward itself (no grad, before the update, as
verl does). Either way `approx_kl_old` is the mean of (engine log-prob - training log-prob before the update) over
the completion tokens: the mismatch of the two paths.
The lm-head weight is read from the model after each forward: under FSDP2 it is a sharded DTensor outside the forward
and the gathered (plain) tensor only after the root module's forward has unsharded it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch

from mrt_kernels import fused_linear_logprobs

from .loss import LossSettings, policy_loss
from .models import packed_metadata
from .step_metrics import UpdateSums


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW; norms, biases (1-D tensors) get no weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_lambda(cfg, total_steps: int):
    """Multiplier of the base lr at optimizer step s: linear warmup over warmup_ratio * total, then cosine / linear /
    constant decay to min_lr_ratio."""
    warm = int(round(cfg.warmup_ratio * total_steps))

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (s - warm) / max(1, total_steps - warm))
        shape = 0.5 * (1.0 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1.0 - frac
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape
    return f


def make_scheduler(optimizer, cfg, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))


def _logprobs(train_model, policy, mb, temperature: float, *, entropy: bool):
    """Training forward of one micro-batch -> per-token log-probs (N,) [, entropy (N,)], fused (no (N, V) logits)."""
    device = mb.input_ids.device
    hidden = train_model(mb.input_ids, mb.positions, packed_metadata(mb.seq_lens, device))   # (N, d)
    w = policy.lm_head_weight          # after the forward: gathered under FSDP2 (module docstring)
    w = w if hidden.dtype == w.dtype else w.to(hidden.dtype)
    return fused_linear_logprobs(hidden, w, mb.targets, temperature=temperature, return_entropy=entropy)


@torch.no_grad()
def recompute_old_logp(train_model, policy, micro, *, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each micro-batch's old_logp (the engine's) by the training forward's, in place, before the update.

    Returns (sum over completion tokens of engine - recomputed log-prob (float64), number of those tokens), 0-d
    tensors on the device: this rank's share of approx_kl_old, read to the host with the step's metrics.
    """
    diff = torch.zeros((), dtype=torch.float64, device=micro[0].mask.device if micro else None)
    n = torch.zeros((), dtype=torch.int64, device=diff.device)
    for mb in micro:
        logp = _logprobs(train_model, policy, mb, temperature, entropy=False).float()
        diff += (mb.old_logp - logp)[mb.mask].sum().double()     # the float32 sum of the masked tokens, in float64
        n += mb.mask.sum()
        mb.old_logp = torch.where(mb.mask, logp, torch.zeros_like(logp))
    return diff, n


@dataclass(frozen=True)
class UpdateSettings:
    """What the update reads from the config, once (`from_config`): the loss's settings, the temperature of the
    log-probs (the rollout's, so old and new log-probs are of the same distribution) and the gradient clip."""
    loss: LossSettings
    temperature: float
    grad_clip: float | None

    @classmethod
    def from_config(cls, cfg) -> "UpdateSettings":
        return cls(LossSettings.from_config(cfg.rl), cfg.rollout.logprob_temperature, cfg.optim.grad_clip)


def run_update(train_model, policy, optimizer, micro, settings: UpdateSettings, *, num_tokens: int, num_seqs: int,
               world_size: int = 1, ref_logp_fn=None) -> UpdateSums:
    """One optimizer step's gradients over the micro-batches `micro` (PackedUpdate list of this rank); the caller
    steps the optimizer. `train_model` takes the forward (the model, DDP or FSDP2); `policy` is the unwrapped model,
    whose lm_head_weight is read after it; num_tokens, num_seqs: the whole batch's counts (all ranks).
    Returns UpdateSums, tensors on the device, nothing read to the host: sums over this rank's completion tokens
    (each micro-batch's mean times its tokens), `loss` (this rank's share: summed over ranks it is the batch loss),
    `grad_norm` (before clipping) and `finite` (False when the step must be skipped: a non-finite loss or gradient
    norm)."""
    optimizer.zero_grad(set_to_none=True)
    device = micro[0].mask.device if micro else None
    zero = torch.zeros((), dtype=torch.float64, device=device)
    sums = dict.fromkeys(("loss", "entropy", "clip_fraction", "clip_high_fraction", "clip_low_fraction", "kl",
                          "approx_kl_old", "ratio_mean"), zero)
    ratio_max, tok, finite = zero, torch.zeros((), dtype=torch.int64, device=device), torch.ones((), dtype=torch.bool,
                                                                                               device=device)
    for i, mb in enumerate(micro):
        # DDP: all-reduce the gradients only on the last micro-batch.
        sync = contextlib.nullcontext() if i == len(micro) - 1 or not hasattr(train_model, "no_sync") \
            else train_model.no_sync()
        with sync:
            logp, entropy = _logprobs(train_model, policy, mb, settings.temperature, entropy=True)
            ref = ref_logp_fn(mb) if ref_logp_fn is not None else None
            loss, st = policy_loss(logp, mb.old_logp, mb.advantages, mb.mask, mb.seq_ids, ref_logp=ref,
                                   num_tokens=num_tokens, num_seqs=num_seqs, **dataclasses.asdict(settings.loss))
            finite = finite & torch.isfinite(loss)
            (loss * world_size).backward()
        n = mb.mask.sum()
        tok = tok + n
        sums["loss"] = sums["loss"] + loss.detach().double()      # this rank's share of the batch loss
        sums["entropy"] = sums["entropy"] + entropy[mb.mask].sum().double()
        for k in ("clip_fraction", "clip_high_fraction", "clip_low_fraction", "kl", "approx_kl_old", "ratio_mean"):
            sums[k] = sums[k] + st[k] * n
        ratio_max = torch.where(st["ratio_max"] > ratio_max, st["ratio_max"], ratio_max)    # max(), NaN not taken
    grad_norm = _clipped_grad_norm(optimizer, settings.grad_clip)
    return UpdateSums(**sums, tokens=tok, ratio_max=ratio_max, grad_norm=grad_norm,
                      finite=finite & torch.isfinite(grad_norm))


def _clipped_grad_norm(optimizer, grad_clip: float | None) -> torch.Tensor:
    """The gradients' global norm (before clipping) as a 0-d tensor, clipping them to grad_clip when set."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if grad_clip is not None:
        gn = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    return (gn.full_tensor() if hasattr(gn, "full_tensor") else gn).detach()
