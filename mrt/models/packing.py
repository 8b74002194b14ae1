"""Packing variable-length sequences without padding: cu_seqlens and per-sequence positions."""
from __future__ import annotations

from typing import Sequence

import torch

from .attention_metadata import PackedMetadata


def packed_metadata(seq_lens: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> PackedMetadata:
    """seq_lens (B,) -> PackedMetadata with cu_seqlens = (0, l0, l0+l1, ...) int32 on device."""
    lens = [int(x) for x in (seq_lens.tolist() if isinstance(seq_lens, torch.Tensor) else seq_lens)]
    if not lens or min(lens) < 0:
        raise ValueError(f"seq_lens must be a non-empty list of non-negative lengths, got {lens}")
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    return PackedMetadata(cu_seqlens=cu.to(device), max_seqlen=max(lens))


def packed_positions(seq_lens: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(sum(seq_lens),) int64: 0..l_b-1 for each sequence b in turn."""
    lens = [int(x) for x in (seq_lens.tolist() if isinstance(seq_lens, torch.Tensor) else seq_lens)]
    return torch.cat([torch.arange(n, dtype=torch.int64) for n in lens]).to(device)
