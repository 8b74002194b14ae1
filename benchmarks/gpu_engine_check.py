"""The rollout engine on a random-weight model of DeepSeek-R1-Distill-Qwen-1.5B's shape (bf16 on a GPU): the checks
and timings that need a GPU, for benchmarks/gpu_check.sh. `--size tiny` runs the same code on a tiny fp32 model on
the CPU in seconds (the test suite does), where "graphs" means the static-buffer path without capture.

Three parts, each reported on its own (a failing part does not stop the others):
1. graphs: greedy generation with CUDA graphs against the same static buffers run eagerly with the same padding
   (the same kernels on the same shapes: identical tokens and log-probs expected, `identical`; on the CPU the
   static path against the eager one, which must be identical too), and against the plain
   eager path (other matrix shapes, so bf16 rounding may flip a near-tie of a random model: the share of identical
   sequences, the mean share of tokens before the first difference, the largest log-prob gap before it).
2. decode: tokens per second of decode alone, B sequences x N new tokens minus the same with 1 new token (the
   prefill), for the engine with graphs, the engine without, and transformers' `generate` on the same weights.
3. forks: the meta-prover's work on a finished trace of L tokens, k boundaries, m answers of a tokens after a
   termination text of t tokens: the engine forking from the trace's cache, against generating from each prefix
   (the engine without sharing: every answer a fresh prompt; and transformers' generate, m answers per boundary).

    python benchmarks/gpu_engine_check.py --size gpu --out bench_results/gpu_engine_check.json
Prints a table and writes JSON {size, device, dtype, parts: {graphs, decode, forks}, errors}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

# DeepSeek-R1-Distill-Qwen-1.5B's config.json (Qwen2 architecture), weights random.
R1_DISTILL_1P5B = dict(architecture="Qwen2ForCausalLM", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                       num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, max_position_embeddings=131072,
                       rms_norm_eps=1e-6, rope_theta=10000.0, qkv_bias=True, tie_word_embeddings=False)
TINY = dict(architecture="Qwen2ForCausalLM", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
            num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=1024, qkv_bias=True)

SIZES = {
    # graph_*: the graphs part; batch/prompt/new: decode; L/k/m/t/a: forks. max_model_len bounds the block tables;
    # num_blocks (of 16 tokens) holds the largest part (forks without sharing: k * m * (L + t + a) tokens), 1.9 GB
    # at the gpu size: an engine left to size itself would take 90% of the free memory, for each engine alive.
    "tiny": dict(model=TINY, dtype="float32", device="cpu", graph_batch=5, graph_new=12, batch=4, prompt=16, new=16,
                 L=96, k=2, m=2, t=4, a=8, max_model_len=256, num_blocks=512, repeats=1),
    "gpu": dict(model=R1_DISTILL_1P5B, dtype="bfloat16", device="cuda", graph_batch=48, graph_new=64, batch=64,
                prompt=128, new=256, L=2048, k=4, m=4, t=32, a=64, max_model_len=4096, num_blocks=4096, repeats=1),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def random_model(shape: dict, dtype: torch.dtype, device: str, seed: int = 0):
    """Our CausalLM of `shape` with transformers' initialisation (N(0, 0.02) weights, zero biases, unit norms), drawn
    on the device itself: a 1.5B model drawn on the host would take most of a minute."""
    from mrt.models import ArchConfig, CausalLM
    config = ArchConfig(**shape, eos_token_ids=[0], bos_token_id=1)
    with torch.device(device):
        model = CausalLM(config).to(dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model.eval()


def hf_twin(model):
    """transformers' model of the same config with our weights (the parameter names are transformers')."""
    import transformers
    cfg = transformers.AutoConfig.for_model(**model.config.to_hf_dict())
    with torch.device(model.device):
        hf = transformers.AutoModelForCausalLM.from_config(cfg, dtype=model.dtype)
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    if [k for k in missing if "rotary" not in k] or unexpected:
        raise RuntimeError(f"transformers' model differs: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _prompts(cfg: dict, n: int, length: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, cfg["model"]["vocab_size"], (n, length), generator=g).tolist()


def _engine(model, cfg: dict, **kw):
    from mrt.rollout import Engine
    return Engine(model, block_size=16, max_model_len=cfg["max_model_len"], num_blocks=cfg["num_blocks"], **kw)


# ---- 1. graphs ------------------------------------------------------------------------------------------------------
def graphs_part(model, cfg: dict) -> dict:
    from mrt.rollout import SamplingParams
    prompts = _prompts(cfg, cfg["graph_batch"], 24, seed=1)
    params = SamplingParams(temperature=0.0, max_tokens=cfg["graph_new"], stop_token_ids=[])

    def run(static_eager=False, **kw):
        eng = _engine(model, cfg, **kw)
        if static_eager:                   # the graphs' buffers and padding, run without capture
            eng.runner.graphs.capture, eng.runner.graphs.pad = False, True
        gen = eng.generate(prompts, params)
        outs = [r.outputs[0] for r in gen.outputs]
        return [o.token_ids for o in outs], [o.logprobs for o in outs], eng.runner.graphs

    g_tok, g_lp, graphs = run(cuda_graphs=True)
    e_tok, e_lp, _ = run(cuda_graphs=False)
    # Captured: against the static path run eagerly with the same padding. Not captured (the CPU): that path is
    # graphs itself, unpadded, and must equal the plain path bit for bit.
    s_tok, s_lp, _ = run(static_eager=True, cuda_graphs=True) if graphs.capture else (e_tok, e_lp, None)
    identical = g_tok == s_tok and all(torch.equal(a, b) for a, b in zip(g_lp, s_lp))
    prefix, gaps = [], []
    for a, b, la, lb in zip(g_tok, e_tok, g_lp, e_lp):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        prefix.append(n / max(len(a), 1))
        if n:
            gaps.append(float((la[:n] - lb[:n]).abs().max()))
    return dict(captured=graphs.capture, captures=graphs.captures, graph_steps=graphs.steps,
                padded_rows=graphs.padded_rows, identical=identical,
                identical_to="static buffers run eagerly, same padding" if graphs.capture else "the eager path",
                eager_same_sequences=sum(a == b for a, b in zip(g_tok, e_tok)) / len(g_tok),
                eager_mean_prefix_share=round(statistics.mean(prefix), 4),
                eager_max_logprob_gap=max(gaps) if gaps else None, ok=identical)


# ---- 2. decode ------------------------------------------------------------------------------------------------------
def decode_part(model, cfg: dict, hf) -> dict:
    from mrt.rollout import SamplingParams
    B, P, N, dev = cfg["batch"], cfg["prompt"], cfg["new"], cfg["device"]
    prompts = _prompts(cfg, B, P, seed=2)

    def engine(new: int, graphs: bool):
        eng = _engine(model, cfg, cuda_graphs=graphs, max_num_seqs=max(B, 1))
        return lambda: eng.generate(prompts, SamplingParams(temperature=0.0, max_tokens=new, stop_token_ids=[]))

    def transformers(new: int):
        ids = torch.tensor(prompts, device=dev)

        def run():
            with torch.no_grad():
                hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                            do_sample=False, pad_token_id=0)
        return run

    methods = {"engine, CUDA graphs": lambda n: engine(n, True), "engine, eager": lambda n: engine(n, False)}
    if hf is not None:
        methods["transformers generate"] = transformers
    rows = []
    for name, make in methods.items():
        full, first = make(N), make(1)
        full(), first()                                        # warm-up: Triton compiles, graph captures
        t_full = statistics.median(_timed(full, dev)[0] for _ in range(cfg["repeats"]))
        t_first = statistics.median(_timed(first, dev)[0] for _ in range(cfg["repeats"]))
        decode_s = max(t_full - t_first, 1e-9)
        rows.append(dict(method=name, batch=B, prompt=P, new_tokens=N, seconds=round(t_full, 4),
                         prefill_seconds=round(t_first, 4), decode_tokens_per_s=round(B * (N - 1) / decode_s, 1),
                         ms_per_decode_step=round(1e3 * decode_s / (N - 1), 3)))
    base = {r["method"]: r["decode_tokens_per_s"] for r in rows}
    for r in rows:
        r["x_eager"] = round(r["decode_tokens_per_s"] / base["engine, eager"], 2)
    return dict(rows=rows, ok=True)


# ---- 3. forks -------------------------------------------------------------------------------------------------------
def forks_part(model, cfg: dict, hf) -> dict:
    from mrt.rollout import ForkRequest, SamplingParams
    L, k, m, t, a, dev = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["device"]
    P = L // 8
    trace = _prompts(cfg, 1, L, seed=3)[0]                     # a finished trace: its tokens are given
    term = _prompts(cfg, 1, t, seed=4)[0]
    bounds = [P + (L - P) * (j + 1) // (k + 1) for j in range(k)]
    answer = SamplingParams(temperature=0.0, max_tokens=a, n=m, stop_token_ids=[])
    one = SamplingParams(temperature=0.0, max_tokens=a, stop_token_ids=[])
    ideal = L + k * (t + m * a)

    def forks():
        eng = _engine(model, cfg)
        hook = lambda view: [ForkRequest(term, answer, tag=b, position=b) for b in bounds] \
            if len(view.output_token_ids) == 1 else None
        gen = eng.generate([trace], SamplingParams(temperature=0.0, max_tokens=1, stop_token_ids=[]), hook=hook)
        branches = gen.outputs[0].outputs[0].branches
        assert len(branches) == k * m, len(branches)
        return gen.stats.tokens_computed, {b.tag: b.token_ids for b in branches}

    def plain():
        eng = _engine(model, cfg, enable_prefix_caching=False)
        gen = eng.generate([trace[:b] + term for b in bounds for _ in range(m)], one)
        return gen.stats.tokens_computed, {b: gen.outputs[i * m].outputs[0].token_ids for i, b in enumerate(bounds)}

    def transformers():
        out = {}
        with torch.no_grad():
            for b in bounds:
                ids = torch.tensor([trace[:b] + term] * m, device=dev)
                gen = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a, min_new_tokens=a,
                                  do_sample=False, pad_token_id=0)
                out[b] = gen[0, ids.shape[1]:].tolist()
        return L + sum(m * (b + t + a) for b in bounds), out

    methods = {"engine, forks": forks, "engine, each prefix (no sharing)": plain}
    if hf is not None:
        methods["transformers generate, each prefix"] = transformers
    rows, answers = [], {}
    for name, fn in methods.items():
        fn()                                                   # warm-up
        times = [_timed(fn, dev) for _ in range(cfg["repeats"])]
        s = statistics.median(x for x, _ in times)
        n, answers[name] = times[-1][1]
        rows.append(dict(method=name, L=L, k=k, m=m, t=t, a=a, tokens_computed=n, x_ideal=round(n / ideal, 3),
                         seconds=round(s, 4)))
    fork_s = rows[0]["seconds"]
    for r in rows:
        r["x_forks_time"] = round(r["seconds"] / max(fork_s, 1e-9), 2)
    # Greedy answers: the fork's first answer at each boundary against the prefix's own (agreement, not a check: a
    # random bf16 model's near-ties may flip between kernels)
    same = {name: sum(answers["engine, forks"][b] == ans.get(b) for b in bounds) / k
            for name, ans in answers.items()}
    return dict(rows=rows, greedy_answers_equal_to_forks=same, ok=True)


PARTS = {"graphs": graphs_part, "decode": decode_part, "forks": forks_part}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' generate rows")
    ap.add_argument("--out", default=os.path.join("bench_results", "gpu_engine_check.json"))
    args = ap.parse_args()
    cfg = SIZES[args.size]
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        sys.exit("--size gpu needs a CUDA GPU")
    t0 = time.perf_counter()
    model = random_model(cfg["model"], DTYPES[cfg["dtype"]], cfg["device"])
    hf = None if args.no_hf or set(args.parts) <= {"graphs"} else hf_twin(model)
    report = dict(size=args.size, device=torch.cuda.get_device_name() if cfg["device"] == "cuda" else "cpu",
                  dtype=cfg["dtype"], model=cfg["model"], parts={}, errors={},
                  setup_seconds=round(time.perf_counter() - t0, 2))
    for name in args.parts:
        t0 = time.perf_counter()
        try:
            fn = PARTS[name]
            report["parts"][name] = fn(model, cfg) if name == "graphs" else fn(model, cfg, hf)
        except Exception as exc:                                     # report and go on to the next part
            report["errors"][name] = "".join(traceback.format_exception(exc))[-3000:]
            print(f"[{name}] FAILED: {exc!r}", flush=True)
        else:
            report["parts"][name]["seconds_total"] = round(time.perf_counter() - t0, 2)
        _print(name, report)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    sys.exit(1 if report["errors"] or not all(p.get("ok") for p in report["parts"].values()) else 0)


def _print(name: str, report: dict) -> None:
    part = report["parts"].get(name)
    if part is None:
        return
    print(f"== {name} ({report['size']}, {report['device']}, {report['dtype']})")
    for row in part.get("rows", []):
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print("  " + "  ".join(f"{k}={v}" for k, v in part.items() if k != "rows"), flush=True)


if __name__ == "__main__":
    main()
