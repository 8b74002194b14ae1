"""One MRT training step of a random-weight model of DeepSeek-R1-Distill-Qwen-1.5B's shape (bf16 on a GPU) with the
fused kernels, against the same step with every op on its reference backend: loss, gradient norm and the lm-head
gradient agree within bf16 rounding; time and peak memory of each. For benchmarks/gpu_check.sh; `--size tiny` runs
the same code on a tiny fp32 model on the CPU in seconds (the test suite does).

The step is the trainer's own (`mrt.update.run_update` on `micro_batches` of a `RolloutBatch`): a synthetic batch of
B traces (groups of G, P prompt and C completion tokens, 3 episodes each with random J, rewards 0/1), advantages from
`progress_advantages` (MRT's dense mode, alpha 1), old log-probs from the training forward plus N(0, 0.05) noise so
the clipped ratio is exercised on both sides.

    python benchmarks/gpu_train_check.py --size gpu --out bench_results/gpu_train_check.json
Prints a table and writes JSON {size, device, rows: [{backend, loss, grad_norm, seconds, peak_mb}], agreement}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_engine_check import DTYPES, R1_DISTILL_1P5B, TINY, random_model  # noqa: E402

SIZES = {
    "tiny": dict(model=TINY, dtype="float32", device="cpu", traces=4, group=2, prompt=8, completion=24),
    "gpu": dict(model=R1_DISTILL_1P5B, dtype="bfloat16", device="cuda", traces=8, group=4, prompt=128,
                completion=384),
}
# Agreement bounds, relative: bf16 rounds to 2^-8 (3.9e-3) and the two backends round the (N, V) logits differently
# (the reference keeps bf16 logits, the fused kernel accumulates in fp32); fp32 to 6e-8, summed over many terms.
RTOL = {"bfloat16": 2e-2, "float32": 1e-4}


def synthetic_batch(cfg: dict, seed: int = 0):
    """A RolloutBatch of B traces, G per group, P + C tokens each, 3 episodes, on the CPU."""
    from mrt.rollout_batch import RolloutBatch
    g = torch.Generator().manual_seed(seed)
    B, G, P, C, V = cfg["traces"], cfg["group"], cfg["prompt"], cfg["completion"], cfg["model"]["vocab_size"]
    i64 = dict(dtype=torch.int64)
    ends = torch.tensor([C // 4, C // 2, 3 * C // 4], **i64).repeat(B)                       # (3B,)
    return RolloutBatch(
        prompt_ids=torch.randint(2, V, (B * P,), generator=g), prompt_offsets=torch.arange(B + 1, **i64) * P,
        completion_ids=torch.randint(2, V, (B * C,), generator=g), old_logp=torch.zeros(B * C),
        token_offsets=torch.arange(B + 1, **i64) * C, rewards=torch.randint(0, 2, (B,), generator=g).float(),
        correct=torch.zeros(B), group_ids=torch.arange(B, **i64) // G, J_prompt=torch.rand(B, generator=g),
        truncated=torch.zeros(B, dtype=torch.bool), episode_offsets=torch.arange(B + 1, **i64) * 3,
        episode_ends=ends, J=torch.rand(3 * B, generator=g))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _with_backend(backend: str | None, fn):
    """fn() with MRT_KERNELS_BACKEND set to backend (None: unset, every op picks its fastest)."""
    old = os.environ.pop("MRT_KERNELS_BACKEND", None)
    if backend is not None:
        os.environ["MRT_KERNELS_BACKEND"] = backend
    try:
        return fn()
    finally:
        os.environ.pop("MRT_KERNELS_BACKEND", None)
        if old is not None:
            os.environ["MRT_KERNELS_BACKEND"] = old


def run(cfg: dict) -> dict:
    from mrt.loss import LossSettings
    from mrt.rollout_batch import micro_batches
    from mrt.update import UpdateSettings, recompute_old_logp, run_update
    from mrt_kernels import progress_advantages
    dev, dtype = cfg["device"], DTYPES[cfg["dtype"]]
    model = random_model(cfg["model"], dtype, dev)
    model.train()
    batch = synthetic_batch(cfg).to(dev)
    adv = progress_advantages(**batch.advantage_inputs(), alpha=1.0, mode="dense")
    adv_ref = progress_advantages(**batch.advantage_inputs(), alpha=1.0, mode="dense", backend="reference")
    micro = micro_batches(batch, adv.advantages, token_budget=1 << 30)
    recompute_old_logp(model, model, micro, temperature=1.0)
    g = torch.Generator().manual_seed(1)
    for mb in micro:
        mb.old_logp = torch.where(mb.mask, mb.old_logp + 0.05 * torch.randn(mb.old_logp.shape, generator=g).to(dev),
                                  mb.old_logp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)           # holds the parameters; never stepped
    settings = UpdateSettings(LossSettings(), temperature=1.0, grad_clip=None)
    n_tok, n_seq = int(sum(int(mb.mask.sum()) for mb in micro)), len(batch)

    def step(backend):
        def go():
            _sync(dev)
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            stats = run_update(model, model, optimizer, micro, settings, num_tokens=n_tok, num_seqs=n_seq)
            _sync(dev)
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2 ** 20 if dev == "cuda" else None
            return stats, seconds, peak, model.lm_head_weight.grad.detach().float().clone()
        return _with_backend(backend, go)

    rows, grads = [], {}
    for name, backend in (("fused (auto)", None), ("reference", "reference")):
        step(backend)                                                  # warm-up: Triton compiles
        stats, seconds, peak, grads[name] = step(backend)
        # UpdateSums: the loss is the step's total, entropy a sum over the completion tokens
        rows.append(dict(backend=name, loss=float(stats.loss), grad_norm=float(stats.grad_norm),
                         entropy=float(stats.entropy / stats.tokens.clamp_min(1)),
                         seconds=round(seconds, 4), peak_mb=None if peak is None else round(peak, 1)))
    fused, ref = rows
    gf, gr = grads["fused (auto)"], grads["reference"]
    agreement = dict(
        loss_rel=abs(fused["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12),
        grad_norm_rel=abs(fused["grad_norm"] - ref["grad_norm"]) / max(ref["grad_norm"], 1e-12),
        lm_head_grad_rel=float((gf - gr).norm() / gr.norm().clamp_min(1e-30)),
        advantages_max_abs=float((adv.advantages - adv_ref.advantages).abs().max()),
        rtol=RTOL[cfg["dtype"]], tokens=int(sum(mb.input_ids.numel() for mb in micro)), completion_tokens=n_tok)
    agreement["ok"] = all(agreement[k] <= agreement["rtol"] for k in ("loss_rel", "grad_norm_rel", "lm_head_grad_rel")) \
        and agreement["advantages_max_abs"] <= 1e-5
    return dict(rows=rows, agreement=agreement)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--out", default=os.path.join("bench_results", "gpu_train_check.json"))
    args = ap.parse_args()
    cfg = SIZES[args.size]
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        sys.exit("--size gpu needs a CUDA GPU")
    result = run(cfg)
    report = dict(size=args.size, device=torch.cuda.get_device_name() if cfg["device"] == "cuda" else "cpu",
                  dtype=cfg["dtype"], **result)
    for row in result["rows"]:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print("agreement: " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in result["agreement"].items()))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    sys.exit(0 if result["agreement"]["ok"] else 1)


if __name__ == "__main__":
    main()
