"""Shared settings of the trainer tests: the tiny model, a few prompts, short traces."""
from __future__ import annotations

import math

import torch

from mrt.config import load_config


def tiny_config(out_dir: str, *extra: str):
    """A run of a few small steps on the embedded model (seconds on the CPU)."""
    args = ["--optim.steps", "2", "--optim.prompts_per_step", "2", "--rollout.group_size", "4",
            "--rollout.max_new_tokens", "64", "--eval.held_out", "4", "--logging.out_dir", str(out_dir),
            "--logging.progress_bar", "false", "--logging.plots", "false", "--checkpoint.every", "0",
            "--optim.lr", "1e-3", "--optim.warmup_ratio", "0", "--optim.schedule", "constant",
            "--data.num_problems", "64", "--meta_prover.prompt_branches", "true", "--eval.samples", "1",
            # B x G traces a step, as most tests count them (tests of dynamic sampling turn it back on)
            "--rl.dynamic_sampling", "false", *extra]
    return load_config(None, args)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def group_norm(xs: list[float], scale: bool, eps: float) -> list[float]:
    n = len(xs)
    if n < 2:
        return [0.0] * n
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return [(x - mean) / (std + eps) if scale else x - mean for x in xs]


def expected_advantages(batch, mode: str, alpha: float, scale: bool = True, eps: float = 1e-6) -> list[float]:
    """The advantages of docs/algorithm.md for every completion token, by Python loops over traces and episodes."""
    traces = batch.traces
    groups: dict[int, list[int]] = {}
    for b, t in enumerate(traces):
        groups.setdefault(t.group, []).append(b)
    progress = []
    for t in traces:
        before = [t.J_prompt] + t.J[:-1]
        progress.append([j - jb for j, jb in zip(t.J, before)])
    if mode == "sum":
        key = [t.reward + alpha * sum(p) for t, p in zip(traces, progress)]
    else:
        key = [t.reward for t in traces]
    norm = [0.0] * len(traces)
    for members in groups.values():
        for b, v in zip(members, group_norm([key[b] for b in members], scale, eps)):
            norm[b] = v
    out = []
    for b, t in enumerate(traces):
        J_last = t.J[-1] if t.J else t.J_prompt
        before = [t.J_prompt] + t.J[:-1]
        ends = t.boundaries
        for k in range(len(t.completion_ids)):
            e = next((i for i, end in enumerate(ends) if k < end), None)   # the episode holding token k
            if mode == "dense":
                out.append(norm[b] + alpha * (progress[b][e] if e is not None else t.reward - J_last))
            elif mode == "sum":
                out.append(norm[b])
            else:
                out.append(t.reward - (before[e] if e is not None else J_last))
    return out
