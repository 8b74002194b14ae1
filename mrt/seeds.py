"""One way to derive the seeds of a run: `derive_seed(purpose, *parts)`.

Every random stream of a run (the data order of an epoch, a step's rollout, dynamic sampling's extra prompts, the
held-out evaluation) takes its seed from a hash of a purpose name and integers (the run's seed, the step, ...), so
streams of different purposes, steps or rounds never coincide, as `seed * a + step * b` arithmetic can make them.
"""
from __future__ import annotations

import hashlib


def derive_seed(purpose: str, *parts: int) -> int:
    """A 31-bit seed (fits every generator's seed argument) from a purpose and integer parts, e.g.
    `derive_seed("rollout", cfg.seed, step, round)`."""
    key = ":".join([purpose, *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF
