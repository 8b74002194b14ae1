"""LoRA in the engine: merge the adapters into a generation copy after each update, or run them in every linear?

For each shape, a model with LoRA on every projection (r = 8, B random so the adapters do work):
- merge: `merge_into` (W = W0 + s B A into the copy's storage, one (out, r) x (r, in) product a linear), paid once
  an update;
- decode: the engine generating `batch` sequences of `new` tokens on the merged copy (a plain model) and on the
  adapted model itself (two thin products and a sum more a linear, every step); the difference per decode step is
  the adapters' overhead, paid at every engine step of every rollout;
- break-even: merge time / overhead per step, the engine steps per update above which merging wins (a rollout of
  the embedded default runs a few hundred: 80 tokens, the meta-prover's forks and a held-out evaluation);
- Adam: the bytes of its two moments after one step, full fine-tuning against LoRA (measured, not computed).
Methods alternate within each repeat (a shared machine's load falls on both); times are medians.

Shapes: tiny (the embedded model's, mrt/assets/tiny_model) and smollm2 (SmolLM2-135M's: Llama, d = 576, 30 layers,
vocab 49,152; random weights), fp32 on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/lora_merge_vs_adapters.py [--shapes tiny smollm2] [--repeats 3]
Prints a table and writes bench_results/lora_merge_vs_adapters.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrt.config import LORA_TARGETS, OptimConfig, resolve_path  # noqa: E402
from mrt.models import CausalLM, packed_metadata, packed_positions  # noqa: E402
from mrt.models.lora import add_adapters, adam_state_bytes, lora_linears, merge_into, merged_copy  # noqa: E402
from mrt.rollout import Engine, SamplingParams  # noqa: E402
from mrt.update import make_optimizer  # noqa: E402

SMOLLM2 = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=576, intermediate_size=1536,
               num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
               max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
               eos_token_id=2, bos_token_id=1)
SHAPES = {"tiny": dict(batch=16, new=64, prompt=24), "smollm2": dict(batch=8, new=32, prompt=32)}
R, ALPHA = 8, 16.0


def base_model(shape: str) -> CausalLM:
    tiny = CausalLM.from_pretrained(resolve_path("mrt:assets/tiny_model"))
    if shape == "tiny":
        return tiny
    config = type(tiny.config).from_hf_dict(SMOLLM2)
    return CausalLM.from_config(config, generator=torch.Generator().manual_seed(0))


def adapted_model(shape: str) -> CausalLM:
    model = base_model(shape)
    add_adapters(model, R, ALPHA, LORA_TARGETS, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in lora_linears(model).values():
            lin.lora_B.weight.copy_(torch.randn(lin.lora_B.weight.shape, generator=g) * 0.02)
    return model


def decode_seconds(model, s: dict) -> tuple[float, int]:
    """Wall seconds of one generate call of batch x new tokens (no early stop), and its decode steps."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, vocab, (s["prompt"],), generator=g).tolist() for _ in range(s["batch"])]
    engine = Engine(model, block_size=16, num_blocks=s["batch"] * ((s["prompt"] + s["new"]) // 16 + 2))
    params = SamplingParams(temperature=1.0, max_tokens=s["new"], seed=3, stop_token_ids=[])
    t = time.perf_counter()
    with torch.no_grad():
        engine.generate(prompts, params)
    return time.perf_counter() - t, s["new"] - 1       # the first token comes from the prefill


def adam_bytes(model) -> tuple[int, int]:
    """(Adam moment bytes after one step, trainable parameters)."""
    opt = make_optimizer(model, OptimConfig())
    ids = torch.arange(3, 19)
    hidden = model(ids, packed_positions([16]), packed_metadata([16]))
    model.compute_logits(hidden).logsumexp(-1).mean().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return adam_state_bytes(opt), n


def run_shape(shape: str, repeats: int) -> dict:
    s = SHAPES[shape]
    model = adapted_model(shape)
    gen, pairs = merged_copy(model)
    merge_into(pairs)                                      # warm-up
    merge = []
    for _ in range(max(5, repeats)):
        t = time.perf_counter()
        merge_into(pairs)
        merge.append(time.perf_counter() - t)
    decode_seconds(gen, s), decode_seconds(model, s)      # warm-up of both paths
    merged_t, adapters_t = [], []
    for _ in range(repeats):
        sec, steps = decode_seconds(gen, s)
        merged_t.append(sec / steps)
        sec, steps = decode_seconds(model, s)
        adapters_t.append(sec / steps)
    m, a, mg = statistics.median(merged_t), statistics.median(adapters_t), statistics.median(merge)
    lora_bytes, lora_n = adam_bytes(model)
    del model, gen, pairs
    full_bytes, full_n = adam_bytes(base_model(shape))
    overhead = a - m
    return {"shape": shape, "batch": s["batch"], "new_tokens": s["new"], "r": R, "targets": LORA_TARGETS,
            "merge_ms": mg * 1e3, "decode_step_ms_merged": m * 1e3, "decode_step_ms_adapters": a * 1e3,
            "adapter_overhead_pct": 100 * overhead / m,
            "break_even_steps": mg / overhead if overhead > 0 else None,
            "adam_bytes_full": full_bytes, "adam_bytes_lora": lora_bytes, "trainable_full": full_n,
            "trainable_lora": lora_n, "adam_shrink": full_bytes / lora_bytes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("bench_results", "lora_merge_vs_adapters.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [run_shape(s, args.repeats) for s in args.shapes]
    head = (f"{'shape':8} {'merge ms':>9} {'step ms merged':>15} {'step ms adapters':>17} {'overhead':>9} "
            f"{'break-even steps':>17} {'Adam MB full':>13} {'Adam MB LoRA':>13} {'shrink':>7}")
    print(head)
    for r in rows:
        be = f"{r['break_even_steps']:.2f}" if r["break_even_steps"] is not None else "never"
        print(f"{r['shape']:8} {r['merge_ms']:9.3f} {r['decode_step_ms_merged']:15.3f} "
              f"{r['decode_step_ms_adapters']:17.3f} {r['adapter_overhead_pct']:8.1f}% {be:>17} "
              f"{r['adam_bytes_full'] / 2**20:13.2f} {r['adam_bytes_lora'] / 2**20:13.3f} {r['adam_shrink']:6.1f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": "cpu", "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
