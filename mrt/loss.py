"""The policy loss: token-level clipped surrogate (DAPO clip-higher), optional k3 KL to a reference, aggregation.

Per completion token t with log-prob `logp_t` under the current policy, `old_t` under the rollout policy and
advantage `A_t`:
    ratio_t = exp(logp_t - old_t)
    l_t     = -min(ratio_t * A_t, clip(ratio_t, 1 - clip_low, 1 + clip_high) * A_t)
            + kl_coef * k3_t,     k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1   (>= 0, unbiased for KL(pi||ref))
The surrogate's gradient is zero where the clip is active (A > 0 and ratio > 1 + clip_high, or A < 0 and
ratio < 1 - clip_low): those tokens are counted in the clip fraction.

Aggregations (registry AGGREGATIONS), over the tokens where `mask` is true, with `seq_ids` giving each token's trace:
- `token_mean`: sum_t l_t / (number of tokens)
- `seq_mean_token_sum`: sum_t l_t / (number of traces)       (each trace's token sum, averaged over traces)
- `constant`: sum_t l_t / (number of traces * constant_normalizer)   (Dr. GRPO: a fixed length, e.g. the budget)
With gradient accumulation the counts must be those of the whole batch, not of the micro-batch: pass `num_tokens` /
`num_seqs` (defaults: this call's), so that the micro-batch losses add up to the batch loss.
The settings (clips, KL coefficient, aggregation) come from the `rl` config section as one `LossSettings`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _token_mean(total, num_tokens, num_seqs, constant):
    return total / max(num_tokens, 1)


def _seq_mean_token_sum(total, num_tokens, num_seqs, constant):
    return total / max(num_seqs, 1)


def _constant(total, num_tokens, num_seqs, constant):
    if constant is None or constant <= 0:
        raise ValueError("constant_normalizer must be > 0 for aggregation 'constant'")
    return total / (max(num_seqs, 1) * constant)


AGGREGATIONS: dict[str, Callable] = {
    "token_mean": _token_mean,
    "seq_mean_token_sum": _seq_mean_token_sum,
    "constant": _constant,
}


@dataclass(frozen=True)
class LossSettings:
    """The loss's settings from the `rl` config section (`from_config`); `policy_loss(..., **asdict(settings))`."""
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    aggregation: str = "token_mean"
    constant_normalizer: float | None = None

    @classmethod
    def from_config(cls, rl) -> "LossSettings":
        return cls(clip_low=rl.clip_low, clip_high=rl.clip_high, kl_coef=rl.kl_coef, aggregation=rl.aggregation,
                   constant_normalizer=rl.constant_normalizer)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                seq_ids: torch.Tensor | None = None, *, clip_low: float = 0.2, clip_high: float = 0.28,
                kl_coef: float = 0.0, ref_logp: torch.Tensor | None = None, aggregation: str = "token_mean",
                constant_normalizer: float | None = None, num_tokens: int | None = None,
                num_seqs: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss (a scalar with grad through logp) and stats; all inputs are (T,) over packed tokens.

    logp: current log-probs (grad); old_logp, advantages, ref_logp: no grad needed; mask: bool, the completion
    tokens that count; seq_ids: int64 trace index of each token (needed to count traces when num_seqs is None).
    Stats (float64 0-d tensors, not read to the host; over masked tokens): clip_fraction, clip_low_fraction,
    clip_high_fraction, ratio_mean, ratio_max, kl (mean k3 to the reference, 0 without one), approx_kl_old (mean old -
    new log-prob), num_tokens.
    """
    _check_inputs(logp, old_logp, advantages, mask, seq_ids, ref_logp, clip_low=clip_low, clip_high=clip_high,
                  kl_coef=kl_coef, aggregation=aggregation)
    m = mask.to(torch.bool)
    old = old_logp.detach().to(logp.dtype)
    adv = advantages.detach().to(logp.dtype)
    log_ratio = logp - old
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    k3 = None
    if ref_logp is not None:
        d = ref_logp.detach().to(logp.dtype) - logp
        k3 = torch.exp(d) - d - 1.0
        if kl_coef > 0:
            per_token = per_token + kl_coef * k3
    # where(): masked-out tokens may hold inf/nan log-probs (e.g. prompt positions) and must not poison the sum.
    total = torch.where(m, per_token, torch.zeros_like(per_token)).sum()
    n_tok = int(m.sum()) if num_tokens is None else num_tokens
    loss = AGGREGATIONS[aggregation](total, n_tok, _num_seqs(m, seq_ids, num_seqs), constant_normalizer)
    return loss, _stats(m, adv, ratio, log_ratio, k3, clip_low=clip_low, clip_high=clip_high)


def _check_inputs(logp, old_logp, advantages, mask, seq_ids, ref_logp, *, clip_low, clip_high, kl_coef,
                  aggregation) -> None:
    """ValueError naming the first bad argument of policy_loss."""
    T = logp.shape[0]
    for name, t in (("old_logp", old_logp), ("advantages", advantages), ("mask", mask)):
        if t.shape != (T,):
            raise ValueError(f"{name}: expected shape ({T},) like logp, got {tuple(t.shape)}")
    if seq_ids is not None and seq_ids.shape != (T,):
        raise ValueError(f"seq_ids: expected shape ({T},) like logp, got {tuple(seq_ids.shape)}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: unknown {aggregation!r} (known: {sorted(AGGREGATIONS)})")
    if kl_coef > 0 and ref_logp is None:
        raise ValueError("ref_logp: required when kl_coef > 0")
    if ref_logp is not None and ref_logp.shape != (T,):
        raise ValueError(f"ref_logp: expected shape ({T},) like logp, got {tuple(ref_logp.shape)}")
    if not 0 <= clip_low < 1 or clip_high < 0:
        raise ValueError(f"clip_low must be in [0, 1) and clip_high >= 0, got {clip_low}, {clip_high}")


def _num_seqs(m: torch.Tensor, seq_ids: torch.Tensor | None, num_seqs: int | None) -> int:
    """The trace count of the normaliser: num_seqs when given, else the traces with a masked-in token."""
    if num_seqs is not None:
        return num_seqs
    if seq_ids is None:
        raise ValueError("seq_ids: required to count traces when num_seqs is not given")
    return int(torch.unique(seq_ids[m]).numel())


@torch.no_grad()
def _stats(m, adv, ratio, log_ratio, k3, *, clip_low: float, clip_high: float) -> dict[str, torch.Tensor]:
    """Clip fractions, ratio and KL statistics over the masked-in tokens (policy_loss's docstring), as float64 0-d
    tensors on logp's device: nothing is read to the host here (the update sums them and the step reads them once,
    mrt.step_metrics). A mean is the float32 sum over the tokens, in float64, over their count."""
    cnt = m.sum().clamp(min=1).double()
    hi = (adv > 0) & (ratio > 1.0 + clip_high) & m
    lo = (adv < 0) & (ratio < 1.0 - clip_low) & m
    r = torch.where(m, ratio, torch.zeros_like(ratio))
    zero = torch.zeros((), dtype=torch.float64, device=m.device)
    return {
        "clip_fraction": (hi | lo).sum().double() / cnt,
        "clip_high_fraction": hi.sum().double() / cnt,
        "clip_low_fraction": lo.sum().double() / cnt,
        "ratio_mean": (r * m.to(ratio.dtype)).sum().double() / cnt,
        "ratio_max": r.max().double() if ratio.shape[0] else zero,
        "kl": torch.where(m, k3, torch.zeros_like(k3)).sum().double() / cnt if k3 is not None else zero,
        "approx_kl_old": torch.where(m, -log_ratio, torch.zeros_like(log_ratio)).sum().double() / cnt,
        "num_tokens": m.sum().double(),
    }
