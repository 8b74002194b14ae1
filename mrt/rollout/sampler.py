"""Token sampling: temperature, top-k, top-p, per-sequence seeds; returns each sampled token's log-prob.

For row b with temperature T_b > 0: p = softmax(logits / T_b); top-k keeps the k largest p, top-p the smallest
set of largest p whose mass reaches top_p (the token that crosses it included); the kept p are renormalised and one
token is drawn. Greedy rows (T_b = 0) take argmax(logits).

Drawing uses the exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) i.i.d. picks i with probability p_i (the
same law as a categorical draw), so a whole batch is drawn with one argmax; rows with a seed draw their E from
their own generator, so a seeded sequence gets the same tokens however it is batched.

The returned log-prob is log_softmax(logits / T)[token] (T = 1 for greedy), taken before top-k/top-p truncation:
the probability of the token under the tempered policy, which is what the trainer's importance ratios need.
"""
from __future__ import annotations

import torch


def _mask_top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """probs (B, V) with the tokens outside each row's top-k / top-p set zeroed (not renormalised)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)                      # (B, V)
    keep = torch.ones_like(sorted_p, dtype=torch.bool)
    if top_k is not None:
        ranks = torch.arange(probs.shape[-1], device=probs.device)
        keep &= ranks[None, :] < top_k[:, None]
    if top_p is not None:
        # Keep token r while the mass strictly before it is < top_p: the token crossing top_p stays.
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p
        keep &= mass_before < top_p[:, None]
    keep[:, 0] = True
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    return torch.zeros_like(probs).scatter_(-1, order, sorted_p)


def sample(logits: torch.Tensor, temperatures: list[float], top_ps: list[float], top_ks: list[int | None],
           generators: list[torch.Generator | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of logits (B, V). Returns (tokens (B,) int64, logprobs (B,) fp32)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got {tuple(logits.shape)}")
    B, V = logits.shape
    if not (len(temperatures) == len(top_ps) == len(top_ks) == len(generators) == B):
        raise ValueError("one temperature, top_p, top_k and generator per row of logits")
    logits = logits.float()
    device = logits.device
    temps = torch.tensor(temperatures, dtype=torch.float32, device=device)
    greedy = temps == 0
    scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
    logp_all = torch.log_softmax(scaled, dim=-1)                                # (B, V)
    tokens = logits.argmax(dim=-1)
    if not bool(greedy.all()):
        probs = logp_all.exp()
        need_k = any(k for k in top_ks)
        need_p = any(p < 1.0 for p in top_ps)
        if need_k or need_p:
            top_k = torch.tensor([k if k else V for k in top_ks], device=device) if need_k else None
            top_p = torch.tensor(top_ps, dtype=torch.float32, device=device) if need_p else None
            probs = _mask_top_k_top_p(probs, top_k, top_p)
        noise = torch.empty_like(probs).exponential_()
        for b, gen in enumerate(generators):
            if gen is not None and not bool(greedy[b]):
                # The seeded draw is made on the CPU generator, then moved: the same stream on every device.
                noise[b] = torch.empty(V, dtype=torch.float32).exponential_(generator=gen).to(device)
        drawn = (probs / noise).argmax(dim=-1)
        tokens = torch.where(greedy, tokens, drawn)
    logprobs = logp_all.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs
