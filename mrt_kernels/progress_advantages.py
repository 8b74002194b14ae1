"""Progress advantages (docs/algorithm.md): episode-level meta-prover success J -> token-level advantages of a packed
batch.

A packed batch holds B traces (E episodes, T completion tokens in all). Trace b owns tokens
token_offsets[b]:token_offsets[b+1] and episodes episode_offsets[b]:episode_offsets[b+1]; episode e of b ends (exclusive)
episode_ends[e] tokens after b's first token. Then
    progress[e] = J[e] - J_before[e],   J_before[e] = J[e-1] within the trace, J_prompt[b] for b's first episode
    regret[b]   = sum over b's episodes of (1 - J[e])
    norm(x)_b   = (x_b - mean_g x) / (std_g x + eps)   (unbiased std over b's group g; x_b - mean_g x without scaling;
                                                         0 for a group of one)
and the advantage of token t of trace b, in episode e (or in the tail after b's last episode end), by mode:
    dense                 norm(r)_b + alpha * progress[e]            tail: norm(r)_b + alpha * (r_b - J_last_b)
    sum                   norm(r + alpha * S)_b,  S_b = sum of b's progress (every token of b)
    termination_baseline  r_b - J_before[e]                          tail: r_b - J_last_b
with J_last_b = J of b's last episode (J_prompt[b] without episodes).

Choices: every backend computes in float64 (the inputs are E- and B-sized; only the T-sized output is large) and
writes float32, so backends agree with the float64 reference to one float32 rounding. Groups may carry any integer
ids in any order: the launcher sorts the traces by id (stable, no host sync) and the kernels take each run of equal
sorted ids as one group, walking it in sorted order, so group statistics are deterministic (no atomics).
Advantages are constants of the loss, so the op has no autograd.Function.

Backends: "cuda" and "cpp" (torch.ops.mrt_kernels.progress_advantages, csrc/progress_advantages*.{h,cpp,cu}),
"triton" (_progress_advantages_triton.py) and "reference" (progress_advantages_ref below, the definition).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ._backend import select_backend


class ProgressAdvantages(NamedTuple):
    advantages: torch.Tensor  # (T,) one per packed completion token
    progress: torch.Tensor    # (E,) J[e] - J_before[e]
    regret: torch.Tensor      # (B,) sum of (1 - J) over each trace's episodes


# Mode names and the integer codes the compiled and Triton kernels take.
MODES = {"dense": 0, "sum": 1, "termination_baseline": 2}


# ----------------------------------------------------------------------------------------------------------------
# Reference (the definition): plain PyTorch, in the dtype of the float inputs.
# ----------------------------------------------------------------------------------------------------------------
def _group_norm_ref(x: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool, eps: float) -> torch.Tensor:
    """(x_b - mean_g x) / (std_g x + eps) over b's group g (unbiased std), or x_b - mean_g x; 0 for a group of one."""
    _, g = torch.unique(group_ids, return_inverse=True)                    # (B,) dense group index
    count = torch.bincount(g).to(x.dtype)                                   # (G,)
    mean = torch.zeros_like(count).index_add_(0, g, x) / count
    dev = x - mean[g]
    if scale_by_std:
        var = torch.zeros_like(count).index_add_(0, g, dev * dev) / (count - 1).clamp(min=1)
        dev = dev / (var.sqrt()[g] + eps)
    return torch.where(count[g] > 1, dev, torch.zeros_like(dev))


def _dense_ref(c: dict) -> torch.Tensor:
    base = _group_norm_ref(c["rewards"], c["group_ids"], c["scale_by_std"], c["eps"])           # (B,)
    tail = c["rewards"] - c["J_last"]                                                               # (B,)
    step = torch.where(c["in_episode"], c["tok_progress"], tail[c["tok_trace"]])                   # (T,)
    return base[c["tok_trace"]] + c["alpha"] * step


def _sum_ref(c: dict) -> torch.Tensor:
    S = torch.zeros_like(c["rewards"]).index_add_(0, c["ep_trace"], c["progress"])                 # (B,)
    base = _group_norm_ref(c["rewards"] + c["alpha"] * S, c["group_ids"], c["scale_by_std"], c["eps"])
    return base[c["tok_trace"]]


def _termination_baseline_ref(c: dict) -> torch.Tensor:
    before = torch.where(c["in_episode"], c["tok_J_before"], c["J_last"][c["tok_trace"]])          # (T,)
    return c["rewards"][c["tok_trace"]] - before


_MODE_REFS: dict[str, Callable[[dict], torch.Tensor]] = {
    "dense": _dense_ref, "sum": _sum_ref, "termination_baseline": _termination_baseline_ref,
}


def progress_advantages_ref(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, group_ids, *,
                            alpha=1.0, mode="dense", scale_by_std=True, eps=1e-6) -> ProgressAdvantages:
    """The definition of the op (module docstring), in the dtype of J / J_prompt / rewards. Does not validate."""
    dtype = torch.promote_types(torch.promote_types(J.dtype, J_prompt.dtype), rewards.dtype)
    J, J_prompt, rewards = J.to(dtype), J_prompt.to(dtype), rewards.to(dtype)
    B, E, T = rewards.numel(), J.numel(), int(token_offsets[-1])
    dev = rewards.device
    n_episodes = episode_offsets.diff()                                                  # (B,)
    ep_trace = torch.repeat_interleave(torch.arange(B, device=dev), n_episodes)          # (E,) trace of each episode
    first = torch.arange(E, device=dev) == episode_offsets[ep_trace]                     # (E,) first of its trace
    J_before = torch.where(first, J_prompt[ep_trace], J.roll(1))
    progress = J - J_before
    regret = torch.zeros_like(rewards).index_add_(0, ep_trace, 1 - J)
    last = (episode_offsets[1:] - 1).clamp(min=0)
    J_last = torch.where(n_episodes > 0, J[last] if E else J_prompt, J_prompt)           # (B,)
    # Episode ends in packed coordinates are strictly increasing over the whole batch (each trace's ends lie in
    # (its first token, its last token + 1]), so the episode of token t is the first whose end is > t.
    ends = token_offsets[ep_trace] + episode_ends                                        # (E,)
    tok_trace = torch.repeat_interleave(torch.arange(B, device=dev), token_offsets.diff())  # (T,)
    tok_episode = torch.searchsorted(ends, torch.arange(T, device=dev), right=True)      # (T,) in [0, E]
    in_episode = tok_episode < episode_offsets[1:][tok_trace]                            # (T,) else a tail token
    pad = lambda x: torch.cat([x, x.new_zeros(1)])  # index E (past the last episode) only reaches tail tokens
    ctx = dict(rewards=rewards, group_ids=group_ids, alpha=alpha, scale_by_std=scale_by_std, eps=eps,
               progress=progress, J_last=J_last, ep_trace=ep_trace, tok_trace=tok_trace, in_episode=in_episode,
               tok_progress=pad(progress)[tok_episode], tok_J_before=pad(J_before)[tok_episode])
    advantages = _MODE_REFS[mode](ctx) if T else torch.zeros(0, dtype=dtype, device=dev)
    return ProgressAdvantages(advantages, progress, regret)


# ----------------------------------------------------------------------------------------------------------------
# Kernels: torch.ops.mrt_kernels.progress_advantages (csrc/, C++ CPU and CUDA) and _progress_advantages_triton.py.
# All take the prepared inputs of _prepare and return float32 (advantages (T,), progress (E,), regret (B,)).
# ----------------------------------------------------------------------------------------------------------------
_OP = "progress_advantages"  # its fake kernel: _fake_kernels.py


# ----------------------------------------------------------------------------------------------------------------
# Launcher: checks (shared by every backend) and the prepared inputs of the kernels.
# ----------------------------------------------------------------------------------------------------------------
_INDEX_ARGS = ("token_offsets", "episode_offsets", "episode_ends", "group_ids")
_FLOAT_ARGS = ("J", "J_prompt", "rewards")


def _check_layout(args: dict) -> None:
    """Types, ranks, lengths and devices; raises ValueError naming the argument."""
    for name, t in args.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"progress_advantages: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"progress_advantages: {name} must be 1-D, got shape {tuple(t.shape)}")
    for name in _INDEX_ARGS:
        if args[name].dtype != torch.int64:
            raise ValueError(f"progress_advantages: {name} must be int64, got {args[name].dtype}")
    for name in _FLOAT_ARGS:
        if not args[name].dtype.is_floating_point:
            raise ValueError(f"progress_advantages: {name} must be a float tensor, got {args[name].dtype}")
    B, E = args["rewards"].numel(), args["episode_ends"].numel()
    expected = dict(token_offsets=B + 1, episode_offsets=B + 1, J=E, J_prompt=B, group_ids=B)
    for name, n in expected.items():
        if args[name].numel() != n:
            what = "episode_ends" if name == "J" else "rewards"
            raise ValueError(f"progress_advantages: {name} has {args[name].numel()} elements, expected {n} "
                             f"(from {what} with {E if name == 'J' else B})")
    device = args["rewards"].device
    for name, t in args.items():
        if t.device != device:
            raise ValueError(f"progress_advantages: {name} is on {t.device}, rewards on {device}")


def _value_checks(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards) -> list[tuple[str, torch.Tensor]]:
    """(message, bool tensor that must be True) for every check on values; vectorised, no host sync."""
    B, E = rewards.numel(), J.numel()
    dev = rewards.device
    lengths = token_offsets.diff()                                                            # (B,)
    # The trace of each episode, found without trusting episode_offsets to be valid (garbage, but no crash, if not).
    ep_trace = (torch.searchsorted(episode_offsets, torch.arange(E, device=dev), right=True) - 1).clamp(0, max(B - 1, 0))
    ends_prev = episode_ends.roll(1)
    same_trace = torch.zeros(E, dtype=torch.bool, device=dev)
    same_trace[1:] = ep_trace[1:] == ep_trace[:-1]
    in_unit = lambda x: ((x >= 0) & (x <= 1)).all()  # NaN fails
    return [
        ("token_offsets must start at 0 and be non-decreasing", (token_offsets[0] == 0) & (lengths >= 0).all()),
        (f"episode_offsets must start at 0, be non-decreasing and end at len(episode_ends) = {E}",
         (episode_offsets[0] == 0) & (episode_offsets.diff() >= 0).all() & (episode_offsets[-1] == E)),
        ("episode_ends must each be in [1, length of its trace]",
         ((episode_ends >= 1) & (episode_ends <= lengths[ep_trace])).all() if B else torch.tensor(True, device=dev)),
        ("episode_ends must be strictly increasing within each trace", (~same_trace | (episode_ends > ends_prev)).all()),
        ("J must be in [0, 1] (no NaN)", in_unit(J)),
        ("J_prompt must be in [0, 1] (no NaN)", in_unit(J_prompt)),
        ("rewards must be finite", torch.isfinite(rewards).all()),
    ]


def _prepare(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, group_ids, alpha, mode,
             scale_by_std, eps) -> dict:
    """Validate everything (one host sync) and build the kernels' inputs."""
    args = dict(token_offsets=token_offsets, episode_offsets=episode_offsets, episode_ends=episode_ends, J=J,
                J_prompt=J_prompt, rewards=rewards, group_ids=group_ids)
    _check_layout(args)
    if mode not in MODES:
        raise ValueError(f"progress_advantages: mode must be one of {sorted(MODES)}, got {mode!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"progress_advantages: alpha must be finite, got {alpha}")
    if not (math.isfinite(eps) and (eps > 0 if scale_by_std else eps >= 0)):
        raise ValueError(f"progress_advantages: eps must be finite and > 0 (>= 0 without scale_by_std), got {eps}")
    checks = _value_checks(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards)
    # One transfer brings back every check and the token count T.
    flags = torch.stack([ok.to(torch.int64) for _, ok in checks] + [token_offsets[-1]]).tolist()
    for (message, _), ok in zip(checks, flags):
        if not ok:
            raise ValueError(f"progress_advantages: {message}")
    sorted_group_ids, order = torch.sort(group_ids, stable=True)  # each group is a run of equal sorted ids
    f64 = lambda t: t.to(torch.float64).contiguous()
    return dict(token_offsets=token_offsets.contiguous(), episode_offsets=episode_offsets.contiguous(),
                episode_ends=episode_ends.contiguous(), J=f64(J), J_prompt=f64(J_prompt), rewards=f64(rewards),
                order=order.contiguous(), sorted_group_ids=sorted_group_ids.contiguous(), num_tokens=int(flags[-1]),
                alpha=float(alpha), mode=MODES[mode], scale_by_std=bool(scale_by_std), eps=float(eps))


def _run_compiled(p: dict) -> tuple[torch.Tensor, ...]:
    return torch.ops.mrt_kernels.progress_advantages(
        p["token_offsets"], p["episode_offsets"], p["episode_ends"], p["J"], p["J_prompt"], p["rewards"], p["order"],
        p["sorted_group_ids"], p["num_tokens"], p["alpha"], p["mode"], p["scale_by_std"], p["eps"])


def _run_triton(p: dict) -> tuple[torch.Tensor, ...]:
    from ._progress_advantages_triton import progress_advantages_triton
    return progress_advantages_triton(**p)


# ----------------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------------
def progress_advantages(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, group_ids, *,
                        alpha=1.0, mode="dense", scale_by_std=True, eps=1e-6, backend=None) -> ProgressAdvantages:
    """Token advantages, per-episode progress and per-trace regret of a packed batch (module docstring).

    token_offsets (B+1,) int64, episode_offsets (B+1,) int64, episode_ends (E,) int64, J (E,) float in [0, 1],
    J_prompt (B,) float in [0, 1], rewards (B,) float, group_ids (B,) int64 (any ids, any order).
    Returns ProgressAdvantages(advantages (T,), progress (E,), regret (B,)), all float32. Bad input raises ValueError.
    backend: "cuda" | "cpp" | "triton" | "reference" | None (fastest available for the tensors' device).
    """
    p = _prepare(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, group_ids, alpha, mode,
                 scale_by_std, eps)
    device = rewards.device
    chosen = select_backend(_OP, device, backend, cpp_op=_OP, cuda_op=_OP, triton_ok=True)
    if chosen == "reference":
        out = progress_advantages_ref(token_offsets, episode_offsets, episode_ends, p["J"], p["J_prompt"],
                                      p["rewards"], group_ids, alpha=alpha, mode=mode, scale_by_std=scale_by_std,
                                      eps=eps)
    elif chosen == "triton":
        out = _run_triton(p)
    else:  # "cpp" or "cuda": one dispatcher op, the device picks the kernel
        out = _run_compiled(p)
    return ProgressAdvantages(*(t.to(torch.float32) for t in out))
