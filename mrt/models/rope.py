"""Rotary position embedding (rope), in the rotate-half layout of the Llama family.

Head dim D is split in halves x = (x1, x2); position p rotates pair (x1_i, x2_i) by angle p * inv_freq_i:
    rope(x, p) = x * cos(p * f) + rotate_half(x) * sin(p * f),   rotate_half(x) = (-x2, x1),   f = (inv_freq, inv_freq)
inv_freq_i = theta^(-2i/D) (i < D/2), changed by the scaling variants in `INV_FREQ`:
- linear: inv_freq / factor (positions stretched by factor);
- llama3: wavelengths 2*pi/inv_freq longer than original_ctx/low_freq_factor are divided by factor, shorter than
  original_ctx/high_freq_factor kept, and in between interpolated with s = (original_ctx/wavelen - low) / (high - low):
  (1 - s) * inv_freq / factor + s * inv_freq.
Angles are computed in float32 from the positions of each forward (no cache of max_position_embeddings rows, which
for 128k-context models would cost more than it saves) and cast to the activations' dtype, as transformers does.
Once per forward, not per layer, the sine table is also given the sign of rotate_half: with roll(x) = (x2, x1),
rotate_half(x) * sin = roll(x) * sin_signed, sin_signed = (-sin_1, sin_2); negation is exact, so every layer's
rope costs a roll, two products and a sum, with the same rounding as transformers' formula.
"""
from __future__ import annotations

import math

import torch


def _default_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    # int64 arange then float, as transformers builds it, so the fp32 values agree bit for bit.
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))


def _linear_inv_freq(head_dim: int, theta: float, scaling: dict) -> torch.Tensor:
    return _default_inv_freq(head_dim, theta, None) / float(scaling["factor"])


def _llama3_inv_freq(head_dim: int, theta: float, scaling: dict) -> torch.Tensor:
    inv_freq = _default_inv_freq(head_dim, theta, None)
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    low_freq_wavelen, high_freq_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


INV_FREQ = {"default": _default_inv_freq, "linear": _linear_inv_freq, "llama3": _llama3_inv_freq}


def inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """(head_dim/2,) float32 CPU inverse frequencies for the rope variant named by scaling['rope_type']."""
    rope_type = "default" if scaling is None else scaling.get("rope_type", "default")
    if rope_type not in INV_FREQ:
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {sorted(INV_FREQ)}")
    return INV_FREQ[rope_type](head_dim, theta, scaling)


class Rotary:
    """cos/sin tables for the positions of one forward pass; not an nn.Module so `.to(dtype)` never rounds inv_freq."""

    def __init__(self, head_dim: int, theta: float, scaling: dict | None = None):
        self.inv_freq = inv_freq(head_dim, theta, scaling)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (N,) int -> cos, sin_signed (N, 1, head_dim) in dtype, ready to broadcast over heads."""
        f = self._on_device.get(positions.device)
        if f is None:
            with torch.inference_mode(False):    # a copy made during generation must also serve training
                f = self._on_device[positions.device] = self.inv_freq.to(positions.device)
        freqs = positions.float()[:, None] * f[None, :]     # (N, D/2), one fp32 product each, as HF's matmul
        sin = freqs.sin()
        cos = torch.cat((freqs, freqs), dim=-1).cos()       # (N, D)
        sin_signed = torch.cat((-sin, sin), dim=-1)
        return cos.to(dtype)[:, None, :], sin_signed.to(dtype)[:, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x (N, H, D), cos / sin_signed (N, 1, D) from `Rotary.cos_sin` -> rope(x) (N, H, D)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed
