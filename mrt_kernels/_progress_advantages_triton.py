"""Triton backend of progress_advantages (the op is defined by progress_advantages_ref in progress_advantages.py).

Three launches over the prepared inputs of the launcher (float64 J / J_prompt / rewards, traces sorted by group id):
  1. one program per trace: progress, regret and x_b (the value group-normalised: r, or r + alpha * sum(progress));
  2. one program per sorted position; the first position of each run of equal group ids normalises its group
     (mean, then unbiased std, then (x - mean) / (std + eps)), the others do nothing;
  3. one program per BLOCK_T packed tokens: binary search of the token's trace in token_offsets and of its episode in
     the trace's episode ends, then the mode's value.
In step 3 `before` = J[e-1] if e is not the trace's first episode, else J_prompt[b], with e the first episode whose
end is past the token (e = the trace's episode count for a tail token): that is J_before[e] for an episode token and
J_last for a tail token, so every mode is one expression.
Everything is float64 until the float32 stores. The binary searches take their step counts (which follow B and E) as
runtime arguments, and B, T and the counts stay out of Triton's specialization, so new batch sizes do not compile new
kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

DENSE, SUM, TERMINATION_BASELINE = 0, 1, 2  # the launcher's MODES codes


@triton.jit
def _trace_kernel(ep_off_ptr, J_ptr, Jp_ptr, r_ptr, progress_ptr, regret_ptr, x_ptr, scalars_ptr,
                  MODE: tl.constexpr, BLOCK_E: tl.constexpr):
    b = tl.program_id(0)
    e0 = tl.load(ep_off_ptr + b)
    e1 = tl.load(ep_off_ptr + b + 1)
    jp = tl.load(Jp_ptr + b)
    acc_progress = tl.zeros((BLOCK_E,), tl.float64)  # lane-wise partial sums, reduced after the loop
    acc_regret = tl.zeros((BLOCK_E,), tl.float64)
    for c in range(e0, e1, BLOCK_E):
        e = c + tl.arange(0, BLOCK_E)
        m = e < e1
        j = tl.load(J_ptr + e, mask=m, other=0.0)
        j_prev = tl.load(J_ptr + e - 1, mask=m & (e > e0), other=0.0)
        p = j - tl.where(e > e0, j_prev, jp)  # progress[e] = J[e] - J_before[e]
        tl.store(progress_ptr + e, p.to(tl.float32), mask=m)
        acc_progress += tl.where(m, p, 0.0)
        acc_regret += tl.where(m, 1.0 - j, 0.0)
    tl.store(regret_ptr + b, tl.sum(acc_regret).to(tl.float32))
    r = tl.load(r_ptr + b)
    if MODE == 1:  # sum
        alpha = tl.load(scalars_ptr)
        tl.store(x_ptr + b, r + alpha * tl.sum(acc_progress))
    else:
        tl.store(x_ptr + b, r)


@triton.jit(do_not_specialize=["B", "nsteps"])
def _group_kernel(order_ptr, sid_ptr, x_ptr, base_ptr, B, scalars_ptr, nsteps, SCALE_BY_STD: tl.constexpr,
                  BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    g = tl.load(sid_ptr + i)
    g_prev = tl.load(sid_ptr + i - 1, mask=i > 0, other=0)
    is_start = (i == 0) | (g_prev != g)
    # End of the run of ids equal to g: the first position in (i, B] whose sorted id differs (binary search).
    lo = i + 1
    hi = B + i * 0
    for _ in range(nsteps):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(sid_ptr + mid, mask=active, other=0)
        right = active & (v == g)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & (v != g), mid, hi)
    end = tl.where(is_start, lo, i)  # positions that do not start a group loop zero times
    n = (end - i).to(tl.float64)
    acc = tl.zeros((BLOCK,), tl.float64)
    for c in range(i, end, BLOCK):
        k = c + tl.arange(0, BLOCK)
        m = k < end
        acc += tl.load(x_ptr + tl.load(order_ptr + k, mask=m, other=0), mask=m, other=0.0)
    mean = tl.sum(acc) / tl.maximum(n, 1.0)
    acc = tl.zeros((BLOCK,), tl.float64)
    for c in range(i, end, BLOCK):
        k = c + tl.arange(0, BLOCK)
        m = k < end
        xv = tl.load(x_ptr + tl.load(order_ptr + k, mask=m, other=0), mask=m, other=0.0)
        d = tl.where(m, xv - mean, 0.0)
        acc += d * d
    m2 = tl.sum(acc)
    std = tl.sqrt(m2 / tl.maximum(n - 1.0, 1.0))
    for c in range(i, end, BLOCK):
        k = c + tl.arange(0, BLOCK)
        m = k < end
        o = tl.load(order_ptr + k, mask=m, other=0)
        dev = tl.load(x_ptr + o, mask=m, other=0.0) - mean
        if SCALE_BY_STD:
            dev = dev / (std + tl.load(scalars_ptr + 1))
        tl.store(base_ptr + o, tl.where(n > 1.0, dev, 0.0), mask=m)  # a group of one gets 0


@triton.jit
def _first_greater(ptr, lo, hi, value, mask, nsteps):
    """Per lane: the first k in [lo, hi) with ptr[k] > value (ptr non-decreasing there), or hi, by nsteps halvings
    (enough for the longest range); masked-off lanes load nothing."""
    for _ in range(nsteps):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(ptr + mid, mask=mask & active, other=0)
        right = active & (v <= value)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & (v > value), mid, hi)
    return lo


@triton.jit(do_not_specialize=["B", "T", "nsteps_b", "nsteps_e"])
def _token_kernel(tok_ptr, ep_off_ptr, ends_ptr, J_ptr, Jp_ptr, r_ptr, base_ptr, adv_ptr, B, T, scalars_ptr,
                  nsteps_b, nsteps_e, MODE: tl.constexpr, BLOCK_T: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    m = t < T
    # Trace b: the first k in [0, B] with token_offsets[k] > t, minus one.
    zero = tl.zeros((BLOCK_T,), tl.int64)
    b = tl.where(m, _first_greater(tok_ptr, zero, zero + B + 1, t, m, nsteps_b) - 1, 0)
    local = t - tl.load(tok_ptr + b, mask=m, other=0)
    e0 = tl.load(ep_off_ptr + b, mask=m, other=0)
    e1 = tl.load(ep_off_ptr + b + 1, mask=m, other=0)
    # Episode e: the first in [e0, e1) whose end is > local; e == e1 for a tail token.
    e = _first_greater(ends_ptr, e0, e1, local, m, nsteps_e)
    in_episode = e < e1
    j_prev = tl.load(J_ptr + e - 1, mask=m & (e > e0), other=0.0)
    before = tl.where(e > e0, j_prev, tl.load(Jp_ptr + b, mask=m, other=0.0))  # J_before[e], or J_last in the tail
    r = tl.load(r_ptr + b, mask=m, other=0.0)
    if MODE == 2:  # termination_baseline
        value = r - before
    else:
        base = tl.load(base_ptr + b, mask=m, other=0.0)
        if MODE == 0:  # dense: alpha * progress[e] in an episode, alpha * (r - J_last) in the tail
            target = tl.where(in_episode, tl.load(J_ptr + e, mask=m & in_episode, other=0.0), r)
            value = base + tl.load(scalars_ptr) * (target - before)
        else:  # sum
            value = base
    tl.store(adv_ptr + t, value.to(tl.float32), mask=m)


def progress_advantages_triton(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, order,
                               sorted_group_ids, num_tokens, alpha, mode, scale_by_std, eps):
    """The prepared inputs of progress_advantages._prepare -> float32 (advantages (T,), progress (E,), regret (B,))."""
    B, E, T = rewards.numel(), J.numel(), num_tokens
    f32 = dict(dtype=torch.float32, device=J.device)
    advantages, progress, regret = torch.empty(T, **f32), torch.empty(E, **f32), torch.empty(B, **f32)
    if B == 0:
        return advantages, progress, regret
    if E == 0:  # no episode is ever read; give the kernels a valid pointer
        J, episode_ends = J.new_zeros(1), episode_ends.new_zeros(1)
    x = torch.empty(B, dtype=torch.float64, device=J.device)     # (B,) the value group-normalised
    base = torch.zeros(B, dtype=torch.float64, device=J.device)  # (B,) its normalised value
    # alpha and eps as float64 in memory: Triton would pass Python floats as float32 arguments.
    scalars = torch.tensor([alpha, eps], dtype=torch.float64).to(J.device, non_blocking=True)
    _trace_kernel[(B,)](episode_offsets, J, J_prompt, rewards, progress, regret, x, scalars, MODE=mode, BLOCK_E=32)
    if mode != TERMINATION_BASELINE:
        _group_kernel[(B,)](order, sorted_group_ids, x, base, B, scalars, max(B, 1).bit_length() + 1,
                            SCALE_BY_STD=scale_by_std, BLOCK=128)
    if T:
        block_t = 1024
        _token_kernel[(triton.cdiv(T, block_t),)](
            token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, base, advantages, B, T, scalars,
            (B + 1).bit_length(), max(E, 1).bit_length() + 1, MODE=mode, BLOCK_T=block_t, num_warps=8)
    return advantages, progress, regret
