"""Rollout workloads on a tiny random model: the meta-prover fork workload and plain sampling throughput.

Meta-prover: one trace of L tokens (prompt included); at k evenly spaced boundaries, m answers of a tokens, each fed a
termination text of t tokens. Three ways, computed tokens and wall time side by side:
  (i)   transformers generate from each full prefix (+ termination text), m answers batched per boundary;
  (ii)  the engine with prefix sharing off: every answer is a fresh prompt (prefix + termination text);
  (iii) the engine with sharing and forks: the branches fork from the trace's own KV cache while it is generated.
Ideal: L + k * (t + m * a) tokens. Goals: (iii) <= 1.1x ideal, >= 5x faster than (ii), >= 10x faster than (i).
Each method's time is also split into the trace alone (timed separately, without the meta-prover) and the rest, the
meta-prover's own cost (meta_prover_seconds, meta_speedup_of_iii).
Throughput: batch B prompts, N new tokens each (no early stop), engine vs transformers generate; goal >= 2x.

    python benchmarks/bench_rollout.py --size cpu [--quick]
Writes bench_results/bench_rollout.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

SIZES = {
    # model shape, meta-prover workload, throughput workload
    "cpu": dict(model=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=32, vocab_size=2048),
                L=1024, k=8, m=4, t=24, a=32, prompt=32, batch=16, new_tokens=256, dtype="float32", device="cpu"),
    "gpu": dict(model=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, head_dim=128, vocab_size=151936),
                L=4096, k=8, m=8, t=40, a=256, prompt=256, batch=64, new_tokens=1024, dtype="bfloat16",
                device="cuda"),
}


def build_model(shape: dict, dtype: torch.dtype, device: str):
    """A random Qwen2 model of `shape` (transformers) and the same weights as our CausalLM."""
    import transformers

    from mrt.models import CausalLM
    cfg = transformers.Qwen2Config(max_position_embeddings=32768, tie_word_embeddings=True, eos_token_id=0,
                                   bos_token_id=1, **shape)
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    path = tempfile.mkdtemp(prefix="bench_rollout_")
    hf.save_pretrained(path)
    ours = CausalLM.from_pretrained(path, dtype=dtype, device=device)
    return hf.to(dtype=dtype, device=device), ours


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def meta_prover(hf, model, cfg, rows):
    from mrt.rollout import Engine, ForkRequest, SamplingParams
    L, k, m, t, a, P, dev = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["prompt"], cfg["device"]
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(2, cfg["model"]["vocab_size"], (P,), generator=g).tolist()
    term = torch.randint(2, cfg["model"]["vocab_size"], (t,), generator=g).tolist()
    # Boundaries: output lengths at which episodes end, evenly spaced inside the trace.
    bounds = [(L - P) * (j + 1) // (k + 1) for j in range(k)]
    trace_params = SamplingParams(temperature=0.9, max_tokens=L - P, stop_token_ids=[], seed=0)
    answer = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=a, n=m, stop_token_ids=[], seed=1)
    ideal = L + k * (t + m * a)

    # The trace alone (no meta-prover), to split each method's time into trace and meta-prover parts: on a tiny
    # model the trace's L decode steps dominate wall time whatever the meta-prover costs.
    eng0 = Engine(model, block_size=16, num_blocks=L // 16 + 64)
    _sync(dev)
    t0 = time.perf_counter()
    eng0.generate([prompt], trace_params)
    _sync(dev)
    t_trace_engine = time.perf_counter() - t0
    def hf_trace():
        ids = torch.tensor([prompt], device=dev)
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=L - P, min_new_tokens=L - P,
                    do_sample=True, temperature=0.9, pad_token_id=0)

    _sync(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        hf_trace()
    _sync(dev)
    t_trace_hf = time.perf_counter() - t0

    # (iii) engine, sharing + forks, the trace generated alongside
    def hook(view):
        return [ForkRequest(term, answer, tag=len(view.output_token_ids))] if len(view.output_token_ids) in bounds \
            else None
    eng = Engine(model, block_size=16, num_blocks=(L + k * m * (t + a)) // 16 + 64 * k * m)
    _sync(dev)
    t0 = time.perf_counter()
    out = eng.generate([prompt], trace_params, hook=hook)[0].outputs[0]
    _sync(dev)
    t_fork = time.perf_counter() - t0
    trace = prompt + out.token_ids
    n_fork = eng.stats["tokens_computed"]
    assert len(out.branches) == k * m

    # (ii) engine, no sharing: the trace, then every answer as its own prompt
    eng2 = Engine(model, block_size=16, enable_prefix_caching=False,
                  num_blocks=(L + m * (L + t + a)) // 16 + 8 * m)
    one = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=a, n=1, stop_token_ids=[], seed=1)
    _sync(dev)
    t0 = time.perf_counter()
    eng2.generate([prompt], trace_params)
    for b in bounds:
        eng2.generate([trace[:P + b] + term] * m, one)
    _sync(dev)
    t_plain = time.perf_counter() - t0
    n_plain = eng2.stats["tokens_computed"]

    # (i) transformers: the trace, then m answers per boundary from the full prefix
    _sync(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        hf_trace()
        for b in bounds:
            ids = torch.tensor([trace[:P + b] + term] * m, device=dev)
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a, min_new_tokens=a,
                        do_sample=True, temperature=0.6, top_p=0.95, pad_token_id=0)
    _sync(dev)
    t_hf = time.perf_counter() - t0
    n_hf = L + sum(m * (P + b + t) + m * a for b in bounds)     # prefill of each batch + one token per decode step

    meta_fork = max(t_fork - t_trace_engine, 1e-9)
    for name, n, s, trace_s in [("(i) transformers generate", n_hf, t_hf, t_trace_hf),
                                ("(ii) engine, no sharing", n_plain, t_plain, t_trace_engine),
                                ("(iii) engine, forks", n_fork, t_fork, t_trace_engine)]:
        rows.append(dict(workload=f"meta-prover L={L} k={k} m={m} t={t} a={a}", method=name, tokens_computed=n,
                         x_ideal=round(n / ideal, 3), seconds=round(s, 3), speedup_of_iii=round(s / t_fork, 2),
                         meta_prover_seconds=round(s - trace_s, 3),
                         meta_speedup_of_iii=round((s - trace_s) / meta_fork, 2)))


def throughput(hf, model, cfg, rows):
    from mrt.rollout import Engine, SamplingParams
    B, N, P, dev = cfg["batch"], cfg["new_tokens"], cfg["prompt"], cfg["device"]
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(2, cfg["model"]["vocab_size"], (B, P), generator=g)
    eng = Engine(model, block_size=16, num_blocks=B * ((P + N) // 16 + 2))
    _sync(dev)
    t0 = time.perf_counter()
    eng.generate(prompts.tolist(), SamplingParams(temperature=1.0, max_tokens=N, stop_token_ids=[], seed=3))
    _sync(dev)
    t_eng = time.perf_counter() - t0
    _sync(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = prompts.to(dev)
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N, do_sample=True,
                    temperature=1.0, pad_token_id=0)
    _sync(dev)
    t_hf = time.perf_counter() - t0
    for name, s in [("transformers generate", t_hf), ("engine", t_eng)]:
        rows.append(dict(workload=f"sampling B={B} new={N}", method=name, tokens_computed=B * (P + N),
                         x_ideal=None, seconds=round(s, 3), speedup_of_iii=None,
                         tokens_per_s=round(B * N / s, 1), engine_speedup=round(t_hf / t_eng, 2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--quick", action="store_true", help="L=256, k=4, 64 new tokens: a smoke run")
    ap.add_argument("--only", choices=["meta", "throughput"], default=None)
    ap.add_argument("--out", default=os.path.join("bench_results", "bench_rollout.json"))
    args = ap.parse_args()
    cfg = dict(SIZES[args.size])
    if args.quick:
        cfg.update(L=256, k=4, new_tokens=64)
    dtype = getattr(torch, cfg["dtype"])
    hf, model = build_model(cfg["model"], dtype, cfg["device"])
    rows: list[dict] = []
    if args.only in (None, "meta"):
        meta_prover(hf, model, cfg, rows)
    if args.only in (None, "throughput"):
        throughput(hf, model, cfg, rows)
    cols = ["workload", "method", "tokens_computed", "x_ideal", "seconds", "speedup_of_iii", "meta_prover_seconds",
            "meta_speedup_of_iii", "tokens_per_s", "engine_speedup"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("" if r.get(c) is None else str(r[c]) for c in cols))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(size=args.size, quick=args.quick, torch_threads=torch.get_num_threads(), config=cfg,
                       rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
