"""Files shipped inside the mrt package: a path `mrt:REL` in a config names the file REL in it (the tiny models, the
presets' assets), so a config works from any working directory and from an installed package."""
from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def resolve_path(path: str | None) -> str | None:
    """`mrt:REL` -> the file REL inside the mrt package; other paths unchanged (user home expanded)."""
    if path is None:
        return None
    if path.startswith("mrt:"):
        return os.path.join(PACKAGE_DIR, path[4:])
    return os.path.expanduser(path)
