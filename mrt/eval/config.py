"""`python -m mrt.eval`'s command line and YAML file, mapped onto the `evaluate:` section of the config tree.

`python -m mrt.eval --model DIR --data FILE [--budgets 4096,8192] [--samples 20] [--out DIR] [--config FILE.yaml]`:
every field of `mrt.config.EvalConfig` is a flag, its name with dashes (`--round-tokens`), with the field's help line;
a bool is `--chat-template` / `--no-chat-template`, a list is comma-separated. The YAML file holds the same keys
(dashes or underscores), flat or as the `evaluate:` section of a whole config tree (a training preset), and the
command line overrides it. `--model` and `--data` repeat; a model may be named `NAME=DIR` (the name labels tables and
plots). Any bad argument, file or value is a ConfigError: one `error:` line (mrt.eval.__main__).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

# The settings are the `evaluate:` section of the one config tree (mrt.config), re-exported here for the CLI's users.
from mrt.config import ConfigError, EvalConfig

_LISTS = ("models", "data", "markers", "think_end", "episode_markers")     # lists of strings
_OPTIONAL_INTS = ("limit", "curve_every", "episode_max")                   # int | None


class _Parser(argparse.ArgumentParser):
    """A bad argument is a ConfigError, reported as one `error:` line like every other bad input."""

    def error(self, message):
        raise ConfigError(f"arguments: {message} (see python -m mrt.eval --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mrt.eval", description="Accuracy at token budgets, maj@k, normalised "
                "regret and extrapolation of one or more models (docs/algorithm.md).")
    p.add_argument("--config", help="YAML file with any of the settings below, flat or as the evaluate: section of "
                                    "a config tree (the command line overrides it)")
    p.add_argument("--check", action="store_true", help="read and check the settings, datasets, model folders and "
                                                        "tokenizers, print what would run, and exit without "
                                                        "generating")
    defaults = EvalConfig()
    for f in dataclasses.fields(EvalConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        default = getattr(defaults, f.name)
        if f.name in ("models", "data"):
            p.add_argument("--" + f.name.rstrip("s"), dest=f.name, action="append", help=help_text,
                           metavar="DIR" if f.name == "models" else "FILE")
        elif isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{help_text} (default: {default})")
        elif isinstance(default, list):
            p.add_argument(flag, dest=f.name, default=None, metavar="A,B,...",
                           help=f"{help_text} (default: {','.join(map(str, default)) or 'none'})")
        else:
            kind = int if f.name in _OPTIONAL_INTS else str if default is None else type(default)
            p.add_argument(flag, dest=f.name, type=kind, default=None,
                           help=help_text if default is None else f"{help_text} (default: {default})")
    return p


def _check_types(values: dict) -> None:
    """A YAML value of the wrong type (a string for a number, a list for a string) -> ConfigError naming the key."""
    defaults = EvalConfig()
    for k, v in values.items():
        d = getattr(defaults, k)
        if v is None or k in _LISTS or k == "budgets":
            ok = v is None and d is None or isinstance(v, (list, str)) or k == "budgets" and isinstance(v, int)
            if k in _LISTS and isinstance(v, list):
                ok = all(isinstance(x, str) for x in v)
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int) or k in _OPTIONAL_INTS:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(d, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str)
        if not ok:
            raise ConfigError(f"{k}: {v!r} has the wrong type (default {d!r})")


def _read_yaml(path: str) -> dict:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        why = " ".join(str(exc).split())[:300]
        raise ConfigError(f"--config: {path} cannot be read as YAML ({type(exc).__name__}: {why})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    section = loaded.get("evaluate")
    if isinstance(section, dict):               # a whole config tree: its evaluate: section
        loaded = section
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    """The config from `--config FILE` and command-line overrides; ConfigError with a clear message on bad input."""
    ns = _parser().parse_args(argv)
    values: dict = _read_yaml(ns.config) if ns.config else {}
    for k, v in vars(ns).items():
        if k not in ("config", "check") and v is not None:
            values[k] = v
    for k in ("model", "dataset"):  # singular spellings in YAML
        if k in values:
            values.setdefault(k + "s" if k == "model" else "data", values.pop(k))
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; known: {sorted(known)}")
    for k in ("models", "data"):
        if isinstance(values.get(k), str):
            values[k] = [values[k]]
    for k in ("markers", "think_end", "episode_markers"):
        if isinstance(values.get(k), str):
            values[k] = [s for s in values[k].split(",") if s]
    _check_types(values)
    cfg = EvalConfig(**values)
    if not cfg.models:
        raise ConfigError("no model given: pass --model DIR (or models: in the config file)")
    if not cfg.data:
        raise ConfigError("no dataset given: pass --data FILE (or data: in the config file)")
    cfg.named_models()
    return cfg

