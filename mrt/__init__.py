"""MRT: Meta Reinforcement Fine-Tuning. `from mrt import Trainer, load_config` (mrt.api) trains from Python; the names
resolve on first use, so `import mrt` (and `mrt.eval`, `mrt.plan`, ...) stays light: no torch until a Trainer is
asked for."""
from __future__ import annotations

_LAZY = {"Trainer": "mrt.trainer", "load_config": "mrt.api", "config_from_dict": "mrt.config", "Config": "mrt.config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value        # resolved once
        return value
    raise AttributeError(f"module 'mrt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
