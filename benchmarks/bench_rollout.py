"""Rollout workloads on a tiny random model: the meta-prover fork workload and plain sampling throughput.

Meta-prover: a trace of L tokens (prompt included); at k evenly spaced boundaries, m answers of a tokens, each fed a
termination text of t tokens. Ideal: L + k * (t + m * a) computed tokens (the trace once, each termination text once,
every answer token). Three ways, computed tokens and wall time side by side:
  (i)   transformers generate from each full prefix (+ termination text), the m answers of a boundary batched;
  (ii)  the engine with prefix sharing off: every answer is a fresh prompt (prefix + termination text);
  (iii) the engine with sharing and forks: the branches fork from the trace's own KV cache.
  (iv)  (iii)'s matrix products alone, replayed with the same weights and shapes (no attention, sampling or
        scheduling): a floor for any engine that computes (iii)'s tokens with these GEMMs, so (i) / (iv) bounds
        the speedup over (i) that such an engine can reach (the "on a trace" workload only).
Two workloads:
- "on a trace" (the goal rows): the meta-prover's own work on a finished trace: (i) and (ii) run every
  prefix from scratch, (iii) prefills the trace once and forks all k boundaries from it (ForkRequest(position=...)).
  Goals: (iii) <= 1.1x ideal tokens, >= 5x faster than (ii), >= 10x faster than (i).
- "during generation" (what the trainer does online): the trace is sampled token by token and (iii) forks at each
  boundary as it is passed, (i) / (ii) run their prefixes after it. The trace's L - P decode steps are the same in
  every method and dominate wall time on a tiny model, so these rows also give the trace alone and the rest, the
  meta-prover's cost (meta_prover_seconds, meta_speedup_of_iii).
Throughput: batch B prompts, N new tokens each (no early stop), engine vs transformers generate (left-padded
batch, KV cache on); goal >= 2x on the toy, >= 1.2x at the real shape.
The methods of a workload run side by side: after --warmup runs of each, --repeats rounds that run every method
once, so a shared machine's load falls on all of them alike. Times are medians over rounds; speedups are medians of
the per-round ratios.

Sizes: cpu (tiny random Qwen2, d=128, 4 layers: Python overhead dominates), cpu-real (SmolLM2-135M's shape, random
weights: the matmuls dominate; meta-prover L=768 k=6 m=4 a=16, sampling 8 x 64), gpu (R1-Distill-Qwen-1.5B's shape).

    python benchmarks/bench_rollout.py --size cpu [--quick] [--repeats 3] [--warmup 1] [--only meta throughput]
Writes bench_results/bench_rollout.json (bench_rollout_<size>.json for other sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

SIZES = {
    # model shape (architecture: transformers' config class prefix), meta-prover workload, throughput workload
    "cpu": dict(arch="Qwen2", model=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=2048),
                L=1024, k=8, m=4, t=24, a=32, prompt=32, batch=16, new_tokens=256, dtype="float32", device="cpu"),
    # SmolLM2-135M's shape (Llama, tied embeddings), random weights: here the matmuls dominate, not Python.
    "cpu-real": dict(arch="Llama", model=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                              num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                              vocab_size=49152),
                     L=768, k=6, m=4, t=24, a=16, prompt=32, batch=8, new_tokens=64, dtype="float32", device="cpu"),
    "gpu": dict(arch="Qwen2", model=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, head_dim=128, vocab_size=151936),
                L=4096, k=8, m=8, t=40, a=256, prompt=256, batch=64, new_tokens=1024, dtype="bfloat16",
                device="cuda"),
}


def build_model(arch: str, shape: dict, dtype: torch.dtype, device: str):
    """A random `arch` (Qwen2, Llama) model of `shape` (transformers) and the same weights as our CausalLM."""
    import transformers

    from mrt.models import CausalLM
    cfg = getattr(transformers, f"{arch}Config")(max_position_embeddings=32768, tie_word_embeddings=True,
                                                 eos_token_id=0, bos_token_id=1, **shape)
    torch.manual_seed(0)
    hf = getattr(transformers, f"{arch}ForCausalLM")(cfg).eval()
    path = tempfile.mkdtemp(prefix="bench_rollout_")
    hf.save_pretrained(path)
    ours = CausalLM.from_pretrained(path, dtype=dtype, device=device)
    return hf.to(dtype=dtype, device=device), ours


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


WARMUP = 1     # set by --warmup


def _side_by_side(fns: dict, repeats: int, device: str) -> dict:
    """{name: (median seconds, last result, per-round seconds)}: WARMUP runs of each fn, then `repeats` rounds that
    run every fn once in turn."""
    results = {name: None for name in fns}
    for _ in range(WARMUP):
        for name, fn in fns.items():
            results[name] = fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            results[name] = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), results[name], times[name]) for name in fns}


def _ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den: the speedup of den's method, each round's pair timed side by side."""
    return round(statistics.median(a / max(b, 1e-9) for a, b in zip(num, den)), 2)


def _workload(cfg):
    from mrt.rollout import SamplingParams
    L, k, m, t, a, P = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["prompt"]
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(2, cfg["model"]["vocab_size"], (P,), generator=g).tolist()
    term = torch.randint(2, cfg["model"]["vocab_size"], (t,), generator=g).tolist()
    # Boundaries: output lengths at which episodes end, evenly spaced inside the trace.
    bounds = [(L - P) * (j + 1) // (k + 1) for j in range(k)]
    trace_params = SamplingParams(temperature=0.9, max_tokens=L - P, stop_token_ids=[], seed=0)
    answer = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=a, n=m, stop_token_ids=[], seed=1)
    one = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=a, n=1, stop_token_ids=[], seed=1)
    return prompt, term, bounds, trace_params, answer, one, L + k * (t + m * a)


def _hf_answers(hf, trace, term, bounds, cfg):
    """(i)'s meta-prover part: transformers generate, m answers per boundary from the full prefix."""
    P, m, a, dev = cfg["prompt"], cfg["m"], cfg["a"], cfg["device"]
    with torch.no_grad():
        for b in bounds:
            ids = torch.tensor([trace[:P + b] + term] * m, device=dev)
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a, min_new_tokens=a,
                        do_sample=True, temperature=0.6, top_p=0.95, pad_token_id=0)


def _hf_trace(hf, prompt, cfg):
    L, P, dev = cfg["L"], cfg["prompt"], cfg["device"]
    ids = torch.tensor([prompt], device=dev)
    with torch.no_grad():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=L - P, min_new_tokens=L - P,
                    do_sample=True, temperature=0.9, pad_token_id=0)


def _hf_tokens(cfg, bounds):
    P, m, t, a = cfg["prompt"], cfg["m"], cfg["t"], cfg["a"]
    return sum(m * (P + b + t) + m * a for b in bounds)      # prefill of each batch + one token per decode step


class _RecordProducts(torch.overrides.TorchFunctionMode):
    """Records every matrix product (F.linear, @, mm, matmul) run under it, as (func, operands): a model
    parameter is kept as itself, any other operand as its shape and whether it is a transposed 2-D view."""

    FUNCS = {torch.nn.functional.linear, torch.matmul, torch.mm, torch.Tensor.__matmul__, torch.Tensor.matmul}

    def __init__(self, params):
        super().__init__()
        self.params = {id(p) for p in params}
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FUNCS:
            ops = [a if id(a) in self.params or not isinstance(a, torch.Tensor) else
                   (tuple(a.shape), a.dim() == 2 and a.stride(0) == 1 and a.shape[0] > 1) for a in args]
            self.calls.append((func, ops, kwargs))
        return func(*args, **kwargs)


def _replay_products(calls, device):
    """A function that reruns the recorded products on fresh operands of the same shapes and layouts."""
    def operand(a):
        if not isinstance(a, tuple):
            return a
        shape, transposed = a
        return torch.randn(shape[::-1], device=device).t() if transposed else torch.randn(shape, device=device)
    prepared = [(func, [operand(a) for a in ops], kw) for func, ops, kw in calls]

    def run():
        with torch.inference_mode():
            for func, ops, kw in prepared:
                func(*ops, **kw)
        return len(prepared)
    return run


def meta_prover_on_trace(hf, model, cfg, rows, repeats):
    """The goal rows: the meta-prover's work on a finished trace."""
    from mrt.rollout import Engine, ForkRequest, SamplingParams
    L, k, m, t, a, P, dev = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["prompt"], cfg["device"]
    prompt, term, bounds, trace_params, answer, one, ideal = _workload(cfg)
    eng0 = Engine(model, block_size=16, num_blocks=L // 16 + 64)
    trace = prompt + eng0.generate([prompt], trace_params).outputs[0].outputs[0].token_ids

    def forks():        # (iii): the trace as a prompt; on its first step the hook forks every boundary
        eng = Engine(model, block_size=16, num_blocks=(L + k * m * (t + a)) // 16 + 8 * k * m)
        hook = lambda view: [ForkRequest(term, answer, tag=b, position=P + b) for b in bounds] \
            if len(view.output_token_ids) == 1 else None
        gen = eng.generate([trace], SamplingParams(temperature=0.0, max_tokens=1, stop_token_ids=[]), hook=hook)
        assert len(gen.outputs[0].outputs[0].branches) == k * m
        return gen.stats.tokens_computed

    def plain():        # (ii): every answer a fresh prompt, no sharing
        eng = Engine(model, block_size=16, enable_prefix_caching=False,
                     num_blocks=k * m * (L + t + a) // 16 + 8 * k * m)
        return eng.generate([trace[:P + b] + term for b in bounds for _ in range(m)], one).stats.tokens_computed

    recorder = _RecordProducts(model.parameters())
    with recorder:
        forks()
    floor = _replay_products(recorder.calls, dev)
    res = _side_by_side({"hf": lambda: _hf_answers(hf, trace, term, bounds, cfg), "plain": plain, "fork": forks,
                         "floor": floor}, repeats, dev)
    n_hf = L + _hf_tokens(cfg, bounds)            # the trace's own prefill once, then every prefix again
    for name, key, n in [("(i) transformers generate", "hf", n_hf), ("(ii) engine, no sharing", "plain", None),
                         ("(iii) engine, forks", "fork", None), ("(iv) (iii)'s matrix products alone", "floor", 0)]:
        s, n_res, per_round = res[key]
        n = res["fork"][1] if key == "floor" else n_res if n is None else n
        rows.append(dict(workload=f"meta-prover on a trace L={L} k={k} m={m} t={t} a={a}", method=name,
                         tokens_computed=n, x_ideal=round(n / ideal, 3), seconds=round(s, 4),
                         speedup_of_iii=_ratio(per_round, res["fork"][2]),
                         speedup_over_i=_ratio(res["hf"][2], per_round),
                         round_seconds=[round(x, 3) for x in per_round]))


def meta_prover_during_generation(hf, model, cfg, rows, repeats):
    """The trainer's online case: the trace is sampled while (iii) forks; (i) / (ii) run the prefixes after it."""
    from mrt.rollout import Engine, ForkRequest
    L, k, m, t, a, P, dev = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["prompt"], cfg["device"]
    prompt, term, bounds, trace_params, answer, one, ideal = _workload(cfg)

    def engine_trace():
        eng = Engine(model, block_size=16, num_blocks=L // 16 + 64)
        return prompt + eng.generate([prompt], trace_params).outputs[0].outputs[0].token_ids

    def forks():
        eng = Engine(model, block_size=16, num_blocks=(L + k * m * (t + a)) // 16 + 8 * k * m)
        hook = lambda view: [ForkRequest(term, answer, tag=len(view.output_token_ids))] \
            if len(view.output_token_ids) in bounds else None
        gen = eng.generate([prompt], trace_params, hook=hook)
        assert len(gen.outputs[0].outputs[0].branches) == k * m
        return gen.stats.tokens_computed

    def plain():
        eng = Engine(model, block_size=16, enable_prefix_caching=False,
                     num_blocks=(L + k * m * (L + t + a)) // 16 + 8 * k * m)
        first = eng.generate([prompt], trace_params)
        trace = prompt + first.outputs[0].outputs[0].token_ids
        rest = eng.generate([trace[:P + b] + term for b in bounds for _ in range(m)], one)
        return (first.stats + rest.stats).tokens_computed

    def transformers():
        _hf_trace(hf, prompt, cfg)
        _hf_answers(hf, trace, term, bounds, cfg)     # the engine's trace: same prefixes for every method

    trace = engine_trace()                            # the prefixes (i) runs: the engine's seeded trace
    res = _side_by_side({"trace_engine": engine_trace, "trace_hf": lambda: _hf_trace(hf, prompt, cfg),
                         "fork": forks, "plain": plain, "hf": transformers}, repeats, dev)
    t_trace_engine, t_trace_hf = res["trace_engine"][0], res["trace_hf"][0]
    (t_fork, n_fork, _), (t_plain, n_plain, _), (t_hf, _, _) = res["fork"], res["plain"], res["hf"]
    n_hf = L + _hf_tokens(cfg, bounds)
    meta_fork = max(t_fork - t_trace_engine, 1e-9)
    for name, n, s, trace_s in [("(i) transformers generate", n_hf, t_hf, t_trace_hf),
                                ("(ii) engine, no sharing", n_plain, t_plain, t_trace_engine),
                                ("(iii) engine, forks", n_fork, t_fork, t_trace_engine)]:
        rows.append(dict(workload=f"meta-prover during generation L={L} k={k} m={m} t={t} a={a}", method=name,
                         tokens_computed=n, x_ideal=round(n / ideal, 3), seconds=round(s, 4),
                         speedup_of_iii=round(s / t_fork, 2), trace_seconds=round(trace_s, 4),
                         meta_prover_seconds=round(s - trace_s, 4),
                         meta_speedup_of_iii=round((s - trace_s) / meta_fork, 2)))


def throughput(hf, model, cfg, rows, repeats):
    from mrt.rollout import Engine, SamplingParams
    B, N, P, dev = cfg["batch"], cfg["new_tokens"], cfg["prompt"], cfg["device"]
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(2, cfg["model"]["vocab_size"], (B, P), generator=g)

    def engine():
        eng = Engine(model, block_size=16, num_blocks=B * ((P + N) // 16 + 2))
        eng.generate(prompts.tolist(), SamplingParams(temperature=1.0, max_tokens=N, stop_token_ids=[], seed=3))

    def transformers():
        with torch.no_grad():
            ids = prompts.to(dev)
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N, do_sample=True,
                        temperature=1.0, pad_token_id=0)

    res = _side_by_side({"hf": transformers, "engine": engine}, repeats, dev)
    speedup = _ratio(res["hf"][2], res["engine"][2])
    for name, key in [("transformers generate", "hf"), ("engine", "engine")]:
        s, _, per_round = res[key]
        rows.append(dict(workload=f"sampling B={B} new={N}", method=name, tokens_computed=B * (P + N),
                         x_ideal=None, seconds=round(s, 4), speedup_of_iii=None,
                         tokens_per_s=round(B * N / s, 1), engine_speedup=speedup,
                         round_seconds=[round(x, 3) for x in per_round]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--quick", action="store_true", help="L=256, k=4, 64 new tokens: a smoke run")
    ap.add_argument("--only", choices=["meta", "online", "throughput"], nargs="+", default=None,
                    help="workloads to run (default all); meta: the goal rows on a finished trace; online: during "
                         "generation")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each method first")
    ap.add_argument("--out", default=None, help="JSON path (default bench_results/bench_rollout[_<size>].json)")
    args = ap.parse_args()
    global WARMUP
    WARMUP = args.warmup
    if args.out is None:
        suffix = "" if args.size == "cpu" else f"_{args.size.replace('-', '_')}"
        args.out = os.path.join("bench_results", f"bench_rollout{suffix}.json")
    cfg = dict(SIZES[args.size])
    if args.quick:
        cfg.update(L=256, k=4, new_tokens=64)
    dtype = getattr(torch, cfg["dtype"])
    hf, model = build_model(cfg["arch"], cfg["model"], dtype, cfg["device"])
    rows: list[dict] = []
    only = set(args.only or ["meta", "online", "throughput"])
    if "meta" in only:
        meta_prover_on_trace(hf, model, cfg, rows, args.repeats)
    if "online" in only:
        meta_prover_during_generation(hf, model, cfg, rows, args.repeats)
    if "throughput" in only:
        throughput(hf, model, cfg, rows, args.repeats)
    cols = ["workload", "method", "tokens_computed", "x_ideal", "seconds", "speedup_of_iii", "speedup_over_i",
            "trace_seconds",
            "meta_prover_seconds", "meta_speedup_of_iii", "tokens_per_s", "engine_speedup"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("" if r.get(c) is None else str(r[c]) for c in cols))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(size=args.size, quick=args.quick, repeats=args.repeats, warmup=args.warmup,
                       torch_threads=torch.get_num_threads(), config=cfg, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
