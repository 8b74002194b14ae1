"""The pair the plan compares: a config's MRT form and its GRPO twin.

For an MRT config (rl.algo mrt), the GRPO twin is the matching `*_grpo.yaml` preset beside it when the config file is
named `*_mrt.yaml` and that file exists (loaded with the same command-line overrides), else the config itself with
`rl.algo grpo` and `meta_prover.enabled false`. Symmetrically, a GRPO config's MRT form is the matching `*_mrt.yaml`,
else the config with `rl.algo mrt` and `meta_prover.enabled true`. Either way the twin is forced to its algorithm
after the overrides, so an override of the meta-prover's settings reaches the MRT side only.
"""
from __future__ import annotations

import os

from ..config import Config, load_config, resolve_path

GRPO = ["--rl.algo", "grpo", "--meta_prover.enabled", "false"]
MRT = ["--meta_prover.enabled", "true", "--rl.algo", "mrt"]


def is_mrt(cfg: Config) -> bool:
    return cfg.rl.algo == "mrt" or cfg.meta_prover.enabled


def sibling_preset(path: str | None, want: str) -> str | None:
    """`x_mrt.yaml` -> `x_grpo.yaml` (want 'grpo') or back, when that file exists; else None."""
    if path is None:
        return None
    other = {"grpo": ("_mrt", "_grpo"), "mrt": ("_grpo", "_mrt")}[want]
    real = resolve_path(path)
    stem, ext = os.path.splitext(real)
    if not stem.endswith(other[0]):
        return None
    candidate = stem[: -len(other[0])] + other[1] + ext
    return candidate if os.path.isfile(candidate) else None


def config_pair(path: str | None, overrides: list[str]) -> tuple[Config, Config, dict]:
    """(the MRT config, the GRPO config, where each came from) for the config at path with overrides."""
    cfg = load_config(path, overrides)
    if is_mrt(cfg):
        other = sibling_preset(path, "grpo")
        grpo = load_config(other if other else path, list(overrides) + GRPO)
        return cfg, grpo, {"mrt": path or "embedded default", "grpo": other or f"{path or 'embedded default'} "
                                                                                "with rl.algo grpo, "
                                                                                "meta_prover.enabled false"}
    other = sibling_preset(path, "mrt")
    mrt = load_config(other if other else path, list(overrides) + MRT)
    return mrt, cfg, {"mrt": other or f"{path} with rl.algo mrt, meta_prover.enabled true", "grpo": path}
