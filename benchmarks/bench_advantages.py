"""progress_advantages: a plain Python loop (what a trainer writes without the kernel) against every backend.

Workload: B traces of about L tokens with K episodes each, G samples per prompt (group ids shuffled), J estimated from
m = 8 meta-prover answers. Prints one table (time per call, speed-up over the loop, max |error| against the float64
reference) and writes bench_results/bench_advantages.json.

    python benchmarks/bench_advantages.py --size cpu     # 4,096 traces x ~2,000 tokens x 16 episodes, CPU tensors
    python benchmarks/bench_advantages.py --size gpu     # the same batch (and 4x more traces) on the GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from mrt_kernels._backend import available_backends
from mrt_kernels.progress_advantages import ProgressAdvantages, progress_advantages, progress_advantages_ref

SIZES = {"cpu": [dict(B=4096, L=2000, K=16)], "gpu": [dict(B=4096, L=2000, K=16), dict(B=16384, L=2000, K=16)]}


def progress_advantages_loop(token_offsets, episode_offsets, episode_ends, J, J_prompt, rewards, group_ids, *,
                             alpha=1.0, mode="dense", scale_by_std=True, eps=1e-6) -> ProgressAdvantages:
    """docs/algorithm.md read literally, one trace and one episode at a time, in Python floats (float64)."""
    to, eo, ends = token_offsets.tolist(), episode_offsets.tolist(), episode_ends.tolist()
    j, jp, r, gid = J.tolist(), J_prompt.tolist(), rewards.tolist(), group_ids.tolist()
    B = len(r)
    progress, regret, j_last, S = [0.0] * len(j), [0.0] * B, [0.0] * B, [0.0] * B
    for b in range(B):
        before = jp[b]
        for e in range(eo[b], eo[b + 1]):
            progress[e] = j[e] - before
            S[b] += progress[e]
            regret[b] += 1.0 - j[e]
            before = j[e]
        j_last[b] = before

    def group_norm(x):
        groups = {}
        for b in range(B):
            groups.setdefault(gid[b], []).append(b)
        out = [0.0] * B
        for members in groups.values():
            n = len(members)
            if n == 1:
                continue
            mean = sum(x[b] for b in members) / n
            std = (sum((x[b] - mean) ** 2 for b in members) / (n - 1)) ** 0.5
            for b in members:
                out[b] = (x[b] - mean) / (std + eps) if scale_by_std else x[b] - mean
        return out

    adv = torch.empty(to[-1], dtype=torch.float32, device=rewards.device)
    if mode == "sum":
        base = group_norm([r[b] + alpha * S[b] for b in range(B)])
        for b in range(B):
            adv[to[b]:to[b + 1]] = base[b]
    else:
        base = group_norm(r) if mode == "dense" else [0.0] * B
        for b in range(B):
            start, before = 0, jp[b]
            for e in range(eo[b], eo[b + 1]):
                value = base[b] + alpha * progress[e] if mode == "dense" else r[b] - before
                adv[to[b] + start:to[b] + ends[e]] = value
                start, before = ends[e], j[e]
            tail = base[b] + alpha * (r[b] - j_last[b]) if mode == "dense" else r[b] - j_last[b]
            adv[to[b] + start:to[b + 1]] = tail
    f32 = dict(dtype=torch.float32, device=rewards.device)
    return ProgressAdvantages(adv, torch.tensor(progress, **f32), torch.tensor(regret, **f32))


def make_batch(B: int, L: int, K: int, *, G: int = 4, m: int = 8, device="cpu", generator=None) -> dict:
    """B traces of L/2..3L/2 tokens with K episodes each (ends strictly increasing, a tail after the last), groups of G."""
    g = generator
    lengths = torch.randint(L // 2, 3 * L // 2, (B,), generator=g)
    gaps = 1 + (torch.rand(B, K, generator=g) * (lengths[:, None] // (K + 1) - 1)).long()  # sum of K gaps < length
    ends = gaps.cumsum(1).flatten()
    J = torch.randint(0, m + 1, (B * K,), generator=g).double() / m
    prompts = torch.randperm(B // G, generator=g).repeat_interleave(G)[torch.randperm(B, generator=g)]
    J_prompt = (torch.randint(0, m + 1, (B // G,), generator=g).double() / m)[prompts]
    batch = dict(token_offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                 episode_offsets=torch.arange(B + 1) * K, episode_ends=ends, J=J, J_prompt=J_prompt,
                 rewards=torch.randint(0, 2, (B,), generator=g).double(), group_ids=prompts * 7919 - 5)
    return {k: v.to(device) for k, v in batch.items()}


def timed(fn, device, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--modes", default="dense,sum,termination_baseline")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default="bench_results/bench_advantages.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.size == "gpu" else "cpu")
    op = "progress_advantages"
    backends = available_backends(device, cpp_op=op, cuda_op=op, triton_ok=True)
    rows = []
    for shape in SIZES[args.size]:
        batch = make_batch(**shape, device=device, generator=torch.Generator().manual_seed(0))
        T, E = int(batch["token_offsets"][-1]), batch["J"].numel()
        for mode in args.modes.split(","):
            ref = progress_advantages_ref(**batch, mode=mode)
            t_loop = timed(lambda: progress_advantages_loop(**batch, mode=mode), device, 1)
            runs = [("python loop", lambda: progress_advantages_loop(**batch, mode=mode), 1)]
            runs += [(b, lambda b=b: progress_advantages(**batch, mode=mode, backend=b), args.repeats) for b in backends]
            for name, fn, repeats in runs:
                t = t_loop if name == "python loop" else timed(fn, device, repeats)
                out = fn()
                err = max((o.double() - r_).abs().max().item() if o.numel() else 0.0 for o, r_ in zip(out, ref))
                rows.append(dict(B=shape["B"], T=T, E=E, mode=mode, impl=name, ms=1e3 * t, speedup=t_loop / t,
                                 max_abs_err=err))
    header = f"{'B':>6} {'T':>10} {'mode':<21} {'impl':<12} {'ms':>10} {'x loop':>8} {'max |err|':>10}"
    print(f"progress_advantages on {device} (threads: {torch.get_num_threads()})")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['B']:>6} {r['T']:>10} {r['mode']:<21} {r['impl']:<12} {r['ms']:>10.2f} {r['speedup']:>8.1f} "
              f"{r['max_abs_err']:>10.2e}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(benchmark="advantages", size=args.size, device=str(device), threads=torch.get_num_threads(),
                       rows=rows), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
