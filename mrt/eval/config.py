"""The evaluation's settings: one self-validating dataclass, filled from a YAML file and/or the command line.

`python -m mrt.eval --model DIR --data FILE [--budgets 4096,8192] [--samples 20] [--out DIR] [--config FILE.yaml]`;
the YAML file holds the same keys (dashes or underscores), and the command line overrides it. `--model` and `--data`
repeat; a model may be named `NAME=DIR` (the name labels tables and plots).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The termination texts are the trainer's (one per model family, mrt.termination): R1's for math files.
from mrt.termination import R1_TERMINATION_TEXT, resolve_termination_text  # noqa: F401 (re-exported)

# Appended in turn, one a round, when the model stops thinking (the paper's extrapolation).
EXTRAPOLATION_MARKERS = ("Wait", "But wait", "Alternatively", "But hold on")


@dataclass
class EvalConfig:
    models: list[str] = field(default_factory=list)      # DIR or NAME=DIR
    data: list[str] = field(default_factory=list)        # JSONL / JSON files, or "arithmetic[:N]" (held-out synthetic)
    out: str = "eval_out"
    prompt_column: str = "problem"
    answer_column: str = "answer"
    limit: int | None = None                             # first N problems of each dataset
    prompt_template: str = "{problem}"                   # applied to the problem before the chat template
    chat_template: bool = True                           # use the tokenizer's chat template when it has one
    verifier: str | None = None                          # reward name; None: the dataset's default ("math")
    # Traces: n samples per problem, each generated once up to the largest budget.
    budgets: list[int] = field(default_factory=lambda: [4096, 8192, 12288, 16384])
    samples: int = 20
    temperature: float = 0.6
    top_p: float = 1.0
    seed: int = 0
    # Meta-prover: after a prefix, the termination text and a short answer (greedy by default: budget forcing).
    termination_text: str | None = None                  # a name (r1, arithmetic) or the text; None: the dataset's
    meta_samples: int = 1
    meta_temperature: float = 0.0
    meta_top_p: float = 1.0
    answer_tokens: int = 32
    regret_interpolation: str = "linear"
    curve_every: int | None = None                       # J-curve grid (fixed-chunk episodes); None: max budget / 16
    # Extrapolation past the budget: rounds of markers when the model stops thinking (0 rounds: off).
    extrapolation_rounds: int = 0
    round_tokens: int = 2048
    eval_every: int = 1
    markers: list[str] = field(default_factory=lambda: list(EXTRAPOLATION_MARKERS))
    think_end: list[str] = field(default_factory=lambda: ["</think>"])
    # Meta-prover forks at episode boundaries (mrt.eval.episode_forcing): the markers segmenter of training
    # (mrt.episodes) with these markers; empty: off. episode_max caps the episodes a trace (None: no cap).
    episode_markers: list[str] = field(default_factory=list)
    episode_min_paragraphs: int = 1
    episode_max: int | None = None
    # Engine.
    dtype: str = "float32"
    device: str = "cpu"
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    progress: bool = True

    def __post_init__(self):
        self.budgets = parse_int_list(self.budgets, "budgets")
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise ValueError(f"budgets must be positive token counts, got {self.budgets}")
        self.budgets = sorted(set(self.budgets))
        for name in ("samples", "meta_samples", "answer_tokens", "round_tokens", "eval_every", "block_size",
                     "max_num_seqs", "max_num_batched_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.extrapolation_rounds < 0:
            raise ValueError(f"extrapolation_rounds must be >= 0, got {self.extrapolation_rounds}")
        if self.episode_min_paragraphs < 1:
            raise ValueError(f"episode_min_paragraphs must be >= 1, got {self.episode_min_paragraphs}")
        if self.episode_max is not None and self.episode_max < 1:
            raise ValueError(f"episode_max must be >= 1 or unset, got {self.episode_max}")
        if any(not isinstance(m, str) or not m.strip() for m in self.episode_markers):
            raise ValueError(f"episode_markers must be non-empty strings, got {self.episode_markers!r}")
        if self.curve_every is not None and self.curve_every < 1:
            raise ValueError(f"curve_every must be >= 1, got {self.curve_every}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        for name in ("temperature", "meta_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("top_p", "meta_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.regret_interpolation not in ("linear", "step"):
            raise ValueError(f"regret_interpolation must be 'linear' or 'step', got {self.regret_interpolation!r}")
        if self.extrapolation_rounds and not self.markers:
            raise ValueError("extrapolation needs at least one marker")
        if self.termination_text is not None:
            self.termination_text = resolve_termination_text(self.termination_text)
        if "{problem}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{problem}}', got {self.prompt_template!r}")

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    def named_models(self) -> list[tuple[str, str]]:
        """[(name, dir)]: NAME=DIR as given, else the folder's name."""
        out = []
        for spec in self.models:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = Path(spec.rstrip("/")).name or spec, spec
            out.append((name, path))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be distinct, got {names}; name them with NAME=DIR")
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_int_list(value, name: str) -> list[int]:
    """"4096,8192" or [4096, 8192] -> [4096, 8192], with an error naming the setting."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        return [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a comma-separated list of integers, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    """A bad argument is a ValueError, reported as one `error:` line like every other bad input (mrt.eval.__main__)."""

    def error(self, message):
        raise ValueError(f"arguments: {message} (see python -m mrt.eval --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mrt.eval", description="Accuracy at token budgets, maj@k, normalised "
                "regret and extrapolation of one or more models (docs/algorithm.md).")
    p.add_argument("--config", help="YAML file with any of the settings below (the command line overrides it)")
    p.add_argument("--model", dest="models", action="append", help="model folder, or NAME=DIR; repeat for several")
    p.add_argument("--data", action="append", help="JSONL/JSON file, or arithmetic[:N]; repeat for several")
    defaults = EvalConfig()
    for f in dataclasses.fields(EvalConfig):
        if f.name in ("models", "data"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, list):
            p.add_argument(flag, dest=f.name, default=None, help="comma-separated")
        else:
            kind = (int if f.name in ("limit", "curve_every", "episode_max")
                    else str if default is None else type(default))
            p.add_argument(flag, dest=f.name, type=kind, default=None)
    return p


def _check_types(values: dict) -> None:
    """A YAML value of the wrong type (a string for a number, a list for a string) -> ValueError naming the key."""
    defaults = EvalConfig()
    for k, v in values.items():
        d = getattr(defaults, k)
        if v is None or k in ("models", "data", "markers", "think_end", "episode_markers", "budgets"):
            ok = v is None and d is None or isinstance(v, (list, str)) or k == "budgets" and isinstance(v, int)
            if k in ("models", "data", "markers", "think_end", "episode_markers") and isinstance(v, list):
                ok = all(isinstance(x, str) for x in v)
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int) or k in ("limit", "curve_every", "episode_max"):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(d, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str)
        if not ok:
            raise ValueError(f"{k}: {v!r} has the wrong type (default {d!r})")


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    """The config from `--config FILE` and command-line overrides; ValueError with a clear message on bad input."""
    ns = _parser().parse_args(argv)
    values: dict = {}
    if ns.config:
        try:
            loaded = yaml.safe_load(Path(ns.config).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            why = " ".join(str(exc).split())[:300]
            raise ValueError(f"--config: {ns.config} cannot be read as YAML ({type(exc).__name__}: {why})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{ns.config}: expected a mapping of settings, got {type(loaded).__name__}")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for k, v in vars(ns).items():
        if k != "config" and v is not None:
            values[k] = v
    for k in ("model", "dataset"):  # singular spellings in YAML
        if k in values:
            values.setdefault(k + "s" if k == "model" else "data", values.pop(k))
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    for k in ("models", "data"):
        if isinstance(values.get(k), str):
            values[k] = [values[k]]
    for k in ("markers", "think_end", "episode_markers"):
        if isinstance(values.get(k), str):
            values[k] = [s for s in values[k].split(",") if s]
    _check_types(values)
    cfg = EvalConfig(**values)
    if not cfg.models:
        raise ValueError("no model given: pass --model DIR (or models: in the config file)")
    if not cfg.data:
        raise ValueError("no dataset given: pass --data FILE (or data: in the config file)")
    cfg.named_models()
    return cfg
