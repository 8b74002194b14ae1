"""One way to derive the seeds of a run: `derive_seed(purpose, *parts)`.

Every random stream of a run (the data order of an epoch, a step's rollout, dynamic sampling's extra prompts, the
held-out evaluation) takes its seed from a hash of a purpose name and integers (the run's seed, the step, ...), so
streams of different purposes, steps or rounds never coincide, as `seed * a + step * b` arithmetic can make them.
"""
from __future__ import annotations

import hashlib


def derive_seed(purpose: str, *parts: int, bits: int = 31) -> int:
    """A seed of `bits` bits (31 by default: fits every generator's seed argument; at most 63) from a purpose and
    integer parts, e.g. `derive_seed("rollout", cfg.seed, step, round)`."""
    if not 1 <= bits <= 63:
        raise ValueError(f"derive_seed: bits must be in 1..63, got {bits}")
    key = ":".join([purpose, *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << bits) - 1)
