"""Token sampling: temperature, top-k, top-p, per-sequence seeds; returns each sampled token's log-prob.

For row b with temperature T_b > 0: p = softmax(logits / T_b); top-k keeps the k largest p, top-p the smallest
set of largest p whose mass reaches top_p (the token that crosses it included); the kept p are renormalised and one
token is drawn. Greedy rows (T_b = 0) take argmax(logits).

Drawing is by inverse CDF: with the kept p in vocabulary order and their running sum C (float64), the token is the
first i with C_i > u * C_V for one uniform u per row, so token i is drawn with probability p_i / C_V. One uniform per
row, not one per vocabulary entry: the whole batch costs a cumsum and a search, and a seeded row's u is a pure
function of its key, computed on the host in Python ints: u = (top 53 bits of the key + 1/2) / 2^53, the key being
a splitmix64 hash of the sequence's seed stream and draw count (`draw_key`). A seeded sequence therefore gets the
same tokens however it is batched, preempted or recomputed, with no generator per row. Unseeded rows take u from
torch's global generator.

The returned log-prob is log_softmax(logits / T)[token] (T = 1 for greedy), taken before top-k/top-p truncation:
the probability of the token under the tempered policy, which is what the trainer's importance ratios need.

A step's (B, V) temporaries are megabytes (24 rows of a 49k vocabulary: 4.7 MB in fp32, 9.4 MB for the float64
CDF). Fresh ones that large come from the OS (glibc maps and unmaps them) and fault their pages in on first touch
every step, which made the CPU CDF 4x slower than a warm buffer: the engine passes `SamplerBuffers`, kept between
steps, and `sample` writes its large temporaries there.
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15            # splitmix64's increment
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(x: int) -> int:
    """A 64-bit unsigned value as the int64 torch stores (two's complement)."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _mix64(z: int) -> int:
    """splitmix64's finaliser on Python ints: a bijection of 64-bit values with full avalanche."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def draw_key(stream: int, draw: int) -> int:
    """The key of a seeded sequence's `draw`-th token (int64): distinct streams and draws give unrelated noise."""
    return _signed(_mix64(_mix64(stream + _GOLDEN) + (draw + 1) * _GOLDEN))


def key_uniform(key: int) -> float:
    """The uniform in (0, 1) of a draw key: its top 53 bits, centred in their cell (never 0 or 1)."""
    return (((key & _MASK64) >> 11) + 0.5) * 2.0 ** -53


class SamplerBuffers:
    """Buffers reused by `sample` across steps, by name; each grows to the largest (B, V) it has served."""

    def __init__(self):
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of `shape`: a view of the buffer `name`, reallocated only to grow."""
        numel = 1
        for n in shape:
            numel *= n
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != device:
            flat = self._flat[name] = torch.empty(numel, dtype=dtype, device=device)
        return flat[:numel].view(shape)


def _empty(buffers: SamplerBuffers | None, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if buffers is None:
        return torch.empty(like.shape, dtype=dtype, device=like.device)
    return buffers.get(name, tuple(like.shape), dtype, like.device)


def _keep_threshold(probs: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                    buffers: SamplerBuffers | None = None) -> torch.Tensor:
    """(B, 1): the smallest p each row keeps: the k-th largest for top-k; for top-p the p of the token whose mass
    makes the kept set reach top_p (the mass of the larger ones before it is < top_p); the larger of the two."""
    B, V = probs.shape
    if probs.device.type == "cpu":
        # numpy sorts values alone ~15x faster than torch's CPU sort, which also builds the permutation. In ascending
        # order the kept tokens are a tail: a[j] is kept while the mass above it, total - cumsum(a)[j], is < top_p.
        import numpy as np
        a = _empty(buffers, "sorted", probs, probs.dtype).numpy()
        np.copyto(a, probs.numpy())
        a.sort(axis=-1)                                                         # ascending, in place
        count = np.full(B, V, dtype=np.int64)
        if top_p is not None:
            above = np.cumsum(a, axis=-1, out=_empty(buffers, "mass", probs, probs.dtype).numpy())
            np.subtract(a.sum(-1, keepdims=True), above, out=above)             # mass strictly above a[j]
            count = np.minimum(count, (above < top_p.numpy()[:, None]).sum(-1))
        if top_k is not None:
            count = np.minimum(count, top_k.numpy())
        count = np.maximum(count, 1)
        return torch.from_numpy(a[np.arange(B), V - count][:, None].copy())
    sorted_p = probs.sort(dim=-1, descending=True).values
    last = torch.full((B,), V - 1, dtype=torch.int64, device=probs.device)
    if top_p is not None:
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p
        last = torch.minimum(last, (mass_before < top_p[:, None]).sum(-1) - 1)
    if top_k is not None:
        last = torch.minimum(last, top_k - 1)
    return sorted_p.gather(-1, last.clamp(min=0)[:, None])


def _mask_top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                      buffers: SamplerBuffers | None = None) -> torch.Tensor:
    """probs (B, V), in place, with the tokens outside each row's top-k / top-p set zeroed (not renormalised): each
    row keeps the tokens whose p is at least its `_keep_threshold`. Tokens tied with the threshold are all kept."""
    return probs.masked_fill_(probs < _keep_threshold(probs, top_k, top_p, buffers), 0.0)


def sample(logits: torch.Tensor, temperatures: list[float], top_ps: list[float], top_ks: list[int | None],
           keys: list[int | None], buffers: SamplerBuffers | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of logits (B, V). Returns (tokens (B,) int64, logprobs (B,) fp32).

    keys: per row, None (a uniform from torch's global generator) or a seeded row's `draw_key(stream, draw)`.
    buffers: where the (B, V) temporaries go (None: fresh tensors); the results never alias them.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got {tuple(logits.shape)}")
    B, V = logits.shape
    if not (len(temperatures) == len(top_ps) == len(top_ks) == len(keys) == B):
        raise ValueError("one temperature, top_p, top_k and key per row of logits")
    logits = logits.float()
    device = logits.device
    greedy = [t == 0 for t in temperatures]
    if all(t == 1.0 for t in temperatures):
        scaled = logits
    else:
        temps = torch.tensor([1.0 if g else t for g, t in zip(greedy, temperatures)], dtype=torch.float32,
                             device=device)
        scaled = logits / temps[:, None]
    logp_all = torch.log_softmax(scaled, dim=-1)                                # (B, V)
    if all(greedy):
        tokens = logits.argmax(dim=-1)
    else:
        probs = torch.exp(logp_all, out=_empty(buffers, "probs", logp_all, logp_all.dtype))   # masked in place
        need_k = any(k for k in top_ks)
        need_p = any(p < 1.0 for p in top_ps)
        if need_k or need_p:
            top_k = torch.tensor([k if k else V for k in top_ks], device=device) if need_k else None
            top_p = torch.tensor(top_ps, dtype=torch.float32, device=device) if need_p else None
            probs = _mask_top_k_top_p(probs, top_k, top_p, buffers)
        u = [None if key is None else key_uniform(key) for key in keys]
        unseeded = [b for b, x in enumerate(u) if x is None]
        if unseeded:
            fresh = torch.rand(len(unseeded), dtype=torch.float64).tolist()
            for b, x in zip(unseeded, fresh):
                u[b] = x
        cdf = torch.cumsum(probs, dim=-1, dtype=torch.float64,                  # (B, V), no float64 copy of probs
                           out=_empty(buffers, "cdf", probs, torch.float64))
        total = cdf[:, -1:]
        # strictly below the total, so the first C_i above the target is always a kept token's (p_i > 0)
        target = torch.minimum(torch.tensor(u, dtype=torch.float64, device=device)[:, None] * total,
                               torch.nextafter(total, torch.zeros_like(total)))
        drawn = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        if any(greedy):
            drawn = torch.where(torch.tensor(greedy, device=device), logits.argmax(dim=-1), drawn)
        tokens = drawn
    logprobs = logp_all.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs
