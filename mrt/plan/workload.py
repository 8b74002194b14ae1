"""The simulated sequences of one rank's step: prompt and trace lengths, episode boundaries, branch answer lengths.

What a run's traces look like is an input to the plan, not something it predicts. Three sources, in order:
1. a workload file (`--workload FILE`, JSON): traces as measured, e.g. by benchmarks/plan_vs_measured.py:
   {"traces": [{"prompt": P, "completion": C, "boundaries": [b, ...]}, ...], "termination_tokens": t,
    "answer_tokens": a}; the rank's traces are drawn from them (in order, cycling);
2. a `metrics.jsonl` of a real run (`--metrics FILE`): the mean completion length (`length`), episodes per trace
   (`episodes`) of its train records, averaged over the last 10;
3. the config alone: placeholders stated in `TraceDistribution.from_config`.
From 2 and 3, completion lengths are lognormal with that mean and a coefficient of variation of 0.6 (R1-style traces
spread widely; the figure is a placeholder), clipped to [1, max_new_tokens] (the clipped ones are the truncated
traces); a trace of C tokens gets Poisson(C * boundaries per token) boundaries, capped at max_episodes - 1, at
uniform positions; prompt lengths are the configured mean +- 25%.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

from ..config import ConfigError

CV = 0.6


@dataclass
class TraceScript:
    prompt: int
    completion: int
    boundaries: list[int] = field(default_factory=list)   # completion token counts, increasing, in [1, completion)


@dataclass
class Workload:
    groups: list[list[TraceScript]]      # per prompt: its G traces (one prompt length per group)
    termination_tokens: int
    answer_tokens: float                 # mean tokens of a branch answer
    source: str

    @property
    def traces(self) -> list[TraceScript]:
        return [t for g in self.groups for t in g]

    def summary(self) -> dict:
        tr = self.traces
        n = max(len(tr), 1)
        return {"source": self.source, "prompts": len(self.groups), "traces": len(tr),
                "mean_prompt": sum(t.prompt for t in tr) / n, "mean_completion": sum(t.completion for t in tr) / n,
                "max_completion": max((t.completion for t in tr), default=0),
                "mean_boundaries": sum(len(t.boundaries) for t in tr) / n,
                "termination_tokens": self.termination_tokens, "answer_tokens": self.answer_tokens}


@dataclass
class TraceDistribution:
    mean_prompt: float
    mean_completion: float
    boundaries_per_token: float
    termination_tokens: int
    answer_tokens: float
    source: str

    @classmethod
    def from_config(cls, cfg) -> "TraceDistribution":
        """Placeholders from the config alone: prompts of min(max_prompt_tokens, 160) tokens (a math problem in a chat
        template; 48 for the synthetic task); traces of a third of max_new_tokens on average when the budget is long
        (R1-style reasoning at a 24k budget averages several thousand tokens), 60% of it otherwise; one boundary per
        800 completion tokens for marker segmentation (R1 traces hit a `Wait` paragraph every few hundred tokens,
        min_paragraphs thins them), every chunk_tokens for `fixed`; branch answers of answer_max_tokens tokens; a
        termination text of one token per 3.6 characters."""
        r, mp, ep = cfg.rollout, cfg.meta_prover, cfg.episodes
        prompt = 48.0 if cfg.data.format == "task" else float(min(cfg.data.max_prompt_tokens, 160))
        mean = r.max_new_tokens / 3 if r.max_new_tokens >= 4096 else 0.6 * r.max_new_tokens
        rate = 1 / ep.chunk_tokens if ep.segmenter == "fixed" else 1 / 800
        return cls(prompt, mean, rate, max(1, round(len(mp.termination_text) / 3.6)), float(mp.answer_max_tokens),
                   "config placeholders")

    @classmethod
    def from_metrics(cls, cfg, path: str) -> "TraceDistribution":
        """Mean completion length and episodes per trace from a run's metrics.jsonl (its last 10 train records)."""
        recs = []
        try:
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        raise ConfigError(f"--metrics: {path} line {i}: not JSON") from None
                    if rec.get("kind") == "train" and "length" in rec:
                        recs.append(rec)
        except OSError as exc:
            raise ConfigError(f"--metrics: {path}: cannot be read ({exc.strerror or exc})") from None
        if not recs:
            raise ConfigError(f"--metrics: {path} has no train records with a 'length'")
        recs = recs[-10:]
        base = cls.from_config(cfg)
        mean = sum(r["length"] for r in recs) / len(recs)
        eps = [r["episodes"] for r in recs if "episodes" in r]
        rate = base.boundaries_per_token if not eps else max(sum(eps) / len(eps) - 1, 0) / max(mean, 1)
        return cls(base.mean_prompt, mean, rate, base.termination_tokens, base.answer_tokens, f"metrics {path}")

    def sample(self, cfg, num_prompts: int, seed: int = 0) -> Workload:
        rng = random.Random(seed)
        r, ep = cfg.rollout, cfg.episodes
        sigma = math.sqrt(math.log(1 + CV * CV))
        mu = math.log(max(self.mean_completion, 1)) - sigma * sigma / 2
        cap = None if ep.max_episodes is None else ep.max_episodes - 1
        groups = []
        for _ in range(num_prompts):
            P = max(1, min(cfg.data.max_prompt_tokens, round(self.mean_prompt * rng.uniform(0.75, 1.25))))
            group = []
            for _ in range(r.group_size):
                C = int(min(r.max_new_tokens, max(1, round(rng.lognormvariate(mu, sigma)))))
                group.append(TraceScript(P, C, _boundaries(rng, C, self.boundaries_per_token, cap)))
            groups.append(group)
        return Workload(groups, self.termination_tokens, self.answer_tokens, self.source)


def _boundaries(rng: random.Random, C: int, rate: float, cap: int | None) -> list[int]:
    lam = C * rate
    # Poisson by inversion (lam is at most a few tens here)
    k, p, u = 0, math.exp(-lam), rng.random()
    s = p
    while u > s and k < 10_000:
        k += 1
        p *= lam / k
        s += p
    k = min(k, C - 1, cap if cap is not None else k)
    return sorted(rng.sample(range(1, C), k)) if k > 0 else []


def load_workload(path: str, cfg, num_prompts: int) -> Workload:
    """A measured workload file -> this rank's num_prompts groups of G traces (drawn in order, cycling)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ConfigError(f"--workload: {path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--workload: {path}: not JSON ({exc})") from None
    rows = data.get("traces") if isinstance(data, dict) else None
    if not rows:
        raise ConfigError(f"--workload: {path}: needs a non-empty 'traces' list")
    scripts = []
    for i, t in enumerate(rows):
        try:
            s = TraceScript(int(t["prompt"]), int(t["completion"]), sorted(int(b) for b in t.get("boundaries", [])))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"--workload: {path}: trace {i} needs integer 'prompt' and 'completion'") from None
        if s.prompt < 1 or s.completion < 1 or any(not 1 <= b < s.completion for b in s.boundaries):
            raise ConfigError(f"--workload: {path}: trace {i} has a length < 1 or a boundary outside the trace")
        scripts.append(s)
    G = cfg.rollout.group_size
    groups, k = [], 0
    for _ in range(num_prompts):
        group = []
        for _ in range(G):
            s = scripts[k % len(scripts)]
            group.append(TraceScript(group[0].prompt if group else s.prompt, s.completion, list(s.boundaries)))
            k += 1
        groups.append(group)
    mp = cfg.meta_prover
    t = int(data.get("termination_tokens") or max(1, round(len(mp.termination_text) / 3.6)))
    a = float(data.get("answer_tokens") or mp.answer_max_tokens)
    return Workload(groups, t, a, f"workload {path}")
