"""Per-step costs of the trainer's CPU-side parts: online episode segmentation, rewards, the policy loss.

Prints a table and writes bench_results/trainer_parts.json. `--size cpu` is small; `--size gpu` is the paper's scale
(256 x 4 traces of ~8k tokens; run it on the GPU machine's CPU, these parts stay on the host except the loss).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mrt.episodes import R1_MARKERS, markers_segmenter  # noqa: E402
from mrt.loss import policy_loss  # noqa: E402
from mrt.rewards import math_reward  # noqa: E402

QWEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizers",
                    "Qwen2.5-Math-1.5B")   # the real tokenizer's files, in the repository (tests/fixtures/README.md)


def trace(rng: random.Random, n_par: int) -> str:
    words = "so we get x = 3 and then the sum is \\frac{1}{2} times y which gives".split()
    paras = [(rng.choice(R1_MARKERS) + ", " if rng.random() < 0.2 else "") +
             " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(n_par)]
    return "\n\n".join(paras) + "\n\nThe answer is \\boxed{42}."


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args()
    n_traces, n_par, n_tok = (16, 20, 200_000) if args.size == "cpu" else (1024, 200, 8_000_000)
    torch.set_num_threads(os.cpu_count() if args.size == "gpu" else 2)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(QWEN)
    rng = random.Random(0)
    ids = [tok(trace(rng, n_par))["input_ids"] for _ in range(n_traces)]
    total = sum(map(len, ids))
    seg = markers_segmenter(R1_MARKERS, 3, 10)
    rows = []

    def online():   # one token at a time, as the engine's hook feeds it
        for x in ids:
            s = seg.stream(tok)
            for t in x:
                s.feed([t])
            s.finish()
    t = timed(online, 1)
    rows.append(("segment online (1 token/feed)", total, t, total / t, "tokens/s"))
    t = timed(lambda: [seg.boundaries(x, tok) for x in ids], 1)
    rows.append(("segment offline", total, t, total / t, "tokens/s"))
    texts = [f"... so \\boxed{{\\frac{{{i}}}{{2}}}}" for i in range(n_traces * 4)]
    t = timed(lambda: [math_reward(x, f"{i / 2}") for i, x in enumerate(texts)], 1)
    rows.append(("math reward (math-verify)", len(texts), t, len(texts) / t, "calls/s"))
    logp = torch.randn(n_tok).clamp(max=-0.01).requires_grad_(True)
    old, adv = logp.detach() + 0.05, torch.randn(n_tok)
    mask, seqs = torch.ones(n_tok, dtype=torch.bool), torch.arange(n_tok) // 1000

    def loss_fb():
        loss, _ = policy_loss(logp, old, adv, mask, seqs, kl_coef=0.01, ref_logp=old)
        loss.backward()
    t = timed(loss_fb)
    rows.append(("policy loss fwd+bwd (k3 KL)", n_tok, t, n_tok / t, "tokens/s"))

    print(f"{'part':34s} {'items':>10s} {'seconds':>9s} {'rate':>14s}")
    for name, n, sec, rate, unit in rows:
        print(f"{name:34s} {n:10d} {sec:9.3f} {rate:12.0f} {unit}")
    os.makedirs("bench_results", exist_ok=True)
    with open("bench_results/trainer_parts.json", "w") as f:
        json.dump({"size": args.size, "rows": [dict(zip(("part", "items", "seconds", "rate", "unit"), r))
                                               for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
