"""Packed (no padding) forward / forward+backward of mrt.models.CausalLM against transformers' padded batch.

Prints a table and writes bench_results/models.json. --size cpu: a tiny Qwen2 on the CPU; --size gpu: the
R1-Distill-Qwen-1.5B shape (random weights, bf16) on the GPU.
"""
import argparse
import json
import os
import time

import torch
import transformers

from mrt.models import CausalLM, ModelConfig, packed_metadata, packed_positions

SIZES = {
    "cpu": dict(hidden=256, inter=704, layers=4, heads=8, kv=2, vocab=4096, batch=8, min_len=32, max_len=384,
                dtype=torch.float32, device="cpu", reps=3),
    "gpu": dict(hidden=1536, inter=8960, layers=28, heads=12, kv=2, vocab=151936, batch=16, min_len=256,
                max_len=4096, dtype=torch.bfloat16, device="cuda", reps=5),
}


def timed(fn, reps, device):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=SIZES, default="cpu")
    s = SIZES[ap.parse_args().size]
    torch.manual_seed(0)
    config = ModelConfig(architecture="Qwen2ForCausalLM", vocab_size=s["vocab"], hidden_size=s["hidden"],
                         intermediate_size=s["inter"], num_layers=s["layers"], num_heads=s["heads"],
                         num_kv_heads=s["kv"], head_dim=s["hidden"] // s["heads"], max_position_embeddings=8192,
                         qkv_bias=True, tie_word_embeddings=True)
    ours = CausalLM.from_config(config, dtype=s["dtype"], device=s["device"])
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{k: v for k, v in config.to_hf_dict().items()
                                                                   if k not in ("architectures",)}))
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
    print(f"batch {len(lens)} sequences, {n} tokens (padded to {len(lens) * max(lens)}), {s['dtype']}, "
          f"{s['device']}")
    print(f"{'case':32s} {'ms':>9s} {'tokens/s':>10s}")
    for r in rows:
        print(f"{r['case']:32s} {r['seconds'] * 1e3:9.1f} {r['tokens_per_s']:10.0f}")
    os.makedirs("bench_results", exist_ok=True)
    with open("bench_results/models.json", "w") as f:
        json.dump(dict(size=s | dict(dtype=str(s["dtype"])), lens=lens, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
