"""Packed (no padding) forward / forward+backward of mrt.models.CausalLM against transformers' padded batch.

Prints a table and writes bench_results/models.json. --size cpu: a tiny Qwen2 on the CPU; --size cpu-real:
SmolLM2-135M's shape (Llama, random weights, fp32) on the CPU; --size gpu: the R1-Distill-Qwen-1.5B shape (random
weights, bf16) on the GPU. Each time is the median of `reps` runs after a warm-up run.
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers

from mrt.models import ArchConfig, CausalLM, packed_metadata, packed_positions

SIZES = {
    "cpu": dict(arch="Qwen2", hidden=256, inter=704, layers=4, heads=8, kv=2, vocab=4096, batch=8, min_len=32,
                max_len=384, dtype=torch.float32, device="cpu", reps=3),
    "cpu-real": dict(arch="Llama", hidden=576, inter=1536, layers=30, heads=9, kv=3, vocab=49152, batch=4,
                     min_len=32, max_len=256, dtype=torch.float32, device="cpu", reps=3),
    "gpu": dict(arch="Qwen2", hidden=1536, inter=8960, layers=28, heads=12, kv=2, vocab=151936, batch=16, min_len=256,
                max_len=4096, dtype=torch.bfloat16, device="cuda", reps=5),
}


def timed(fn, reps, device):
    """Median seconds of `reps` runs after a warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=SIZES, default="cpu")
    ap.add_argument("--out", default=os.path.join("bench_results", "models.json"))
    args = ap.parse_args()
    s = SIZES[args.size]
    torch.manual_seed(0)
    arch = s["arch"]
    config = ArchConfig(architecture=f"{arch}ForCausalLM", vocab_size=s["vocab"], hidden_size=s["hidden"],
                        intermediate_size=s["inter"], num_layers=s["layers"], num_heads=s["heads"],
                        num_kv_heads=s["kv"], head_dim=s["hidden"] // s["heads"], max_position_embeddings=8192,
                        qkv_bias=arch == "Qwen2", tie_word_embeddings=True)
    ours = CausalLM.from_config(config, dtype=s["dtype"], device=s["device"])
    hf_config = getattr(transformers, f"{arch}Config")(**{k: v for k, v in config.to_hf_dict().items()
                                                          if k not in ("architectures",)})
    hf = getattr(transformers, f"{arch}ForCausalLM")(hf_config)
    hf = hf.to(s["device"], s["dtype"])
    hf.load_state_dict(ours.state_dict(), strict=False)
    lens = torch.randint(s["min_len"], s["max_len"] + 1, (s["batch"],)).tolist()
    n = sum(lens)
    ids = torch.randint(0, s["vocab"], (n,), device=s["device"])
    pos, meta = packed_positions(lens, s["device"]), packed_metadata(lens, s["device"])
    padded = torch.zeros(len(lens), max(lens), dtype=torch.long, device=s["device"])
    mask = torch.zeros_like(padded)
    for b, (a, e) in enumerate(zip(meta.cu_seqlens[:-1].tolist(), meta.cu_seqlens[1:].tolist())):
        padded[b, : e - a], mask[b, : e - a] = ids[a:e], 1

    def ours_fwd():
        with torch.no_grad():
            ours(ids, pos, meta)

    def hf_fwd():
        with torch.no_grad():
            hf.model(input_ids=padded, attention_mask=mask)

    def ours_train():
        ours(ids, pos, meta).float().square().mean().backward()

    def hf_train():
        hf.model(input_ids=padded, attention_mask=mask).last_hidden_state.float().square().mean().backward()

    rows = []
    for name, fn in [("packed fwd (mrt)", ours_fwd), ("padded fwd (transformers)", hf_fwd),
                     ("packed fwd+bwd (mrt)", ours_train), ("padded fwd+bwd (transformers)", hf_train)]:
        sec = timed(fn, s["reps"], s["device"])
        rows.append(dict(case=name, seconds=sec, tokens=n, tokens_per_s=n / sec))
    for ours_row, hf_row in (rows[0:2], rows[2:4]):       # mrt's speedup over transformers, side by side
        ours_row["speedup_vs_transformers"] = hf_row["seconds"] / ours_row["seconds"]
    print(f"--size {args.size}: batch {len(lens)} sequences, {n} tokens (padded to {len(lens) * max(lens)}), "
          f"{s['dtype']}, {s['device']}, median of {s['reps']}, {torch.get_num_threads()} threads")
    print(f"{'case':32s} {'ms':>9s} {'tokens/s':>10s} {'mrt speedup':>12s}")
    for r in rows:
        sp = r.get("speedup_vs_transformers")
        print(f"{r['case']:32s} {r['seconds'] * 1e3:9.1f} {r['tokens_per_s']:10.0f} "
              f"{'' if sp is None else f'{sp:.2f}x':>12s}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(size=args.size, shape=s | dict(dtype=str(s["dtype"])), torch_threads=torch.get_num_threads(),
                       lens=lens, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
