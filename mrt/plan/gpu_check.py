"""The plan's predictions for the engine rows that `benchmarks/bench_rollout.py` measures, at any of its sizes.

`benchmarks/gpu_check.sh` runs `bench_rollout.py --size gpu --only meta throughput`; to print the plan's figure
beside each measured row:

    python -m mrt.plan --gpu-check --gpu h200 [--json]      # rows: workload, method, predicted_seconds

or `predict_gpu_check(gpu="h200")` from Python. Each row re-enacts the benchmark's own requests on the plan's
SimEngine (the engine's scheduler and block manager, a priced runner), with the benchmark's shapes read from
`benchmarks/bench_rollout.py`'s SIZES (so the two cannot drift apart):
- "(ii) engine, no sharing": every answer a fresh prompt (prefix + termination text), prefix caching off;
- "(iii) engine, forks": the finished trace as a prompt, one token, every boundary forked on its first step;
- "engine" (sampling): B prompts x N new tokens, no early stop.
Methods (i) and (iv) are transformers' generate and a replay of (iii)'s products: not the engine, not predicted.
"""
from __future__ import annotations

import importlib.util
import os

from ..config import ConfigError, MetaProverConfig
from .costs import Part
from .profiles import DeviceProfile, get_profile
from .pricing_runner import PricingRunner
from .shape import DTYPE_BYTES, ModelShape
from .sim_engine import SimEngine
from .workload import TraceScript, Workload

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks", "bench_rollout.py")


def bench_sizes() -> dict:
    """bench_rollout.py's SIZES (read from the repository's benchmarks/)."""
    if not os.path.isfile(BENCH):
        raise ConfigError(f"--gpu-check: {os.path.normpath(BENCH)} not found (run from a clone of the repository)")
    spec = importlib.util.spec_from_file_location("_bench_rollout_sizes", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SIZES


def bench_shape(cfg: dict) -> ModelShape:
    m = cfg["model"]
    return ModelShape(name=f"bench_rollout {cfg['arch']}", vocab=m["vocab_size"], hidden=m["hidden_size"],
                      intermediate=m["intermediate_size"], layers=m["num_hidden_layers"],
                      heads=m["num_attention_heads"], kv_heads=m["num_key_value_heads"], head_dim=m["head_dim"],
                      context=32768, tied=True, qkv_bias=cfg["arch"] == "Qwen2", dtype_bytes=DTYPE_BYTES[cfg["dtype"]],
                      eos_token_ids=(0,))


class _ForkAll(SimEngine):
    """(iii)'s hook: on the trace's first sampled token, fork m branches at every boundary P + b."""

    def _hook(self, seq):
        from ..rollout import ForkRequest
        if seq.num_output_tokens != 1:
            return []
        return [ForkRequest(self._term, self._branch_params, tag=b, position=self.fork_prompt + b)
                for b in self.fork_bounds]


def _seconds(cls, shape, profile, workload, *, num_blocks, prefix_caching=True, meta=None, max_new=1, **attrs):
    from .step import engine_has_cuda_graphs
    runner = PricingRunner(shape, profile, hook=False, cuda_graphs=engine_has_cuda_graphs())
    eng = cls(runner, num_blocks=num_blocks, block_size=16, max_num_seqs=256, max_num_batched_tokens=8192,
              enable_prefix_caching=prefix_caching, max_model_len=shape.context)
    for k, v in attrs.items():
        setattr(eng, k, v)
    eng.simulate(workload, max_new_tokens=max_new, meta=meta)
    total = Part()
    for p in runner.parts.values():
        total += p
    return total.seconds


def predict_bench_rollout(cfg: dict, profile: DeviceProfile) -> list[dict]:
    """One bench_rollout size's engine rows, predicted on `profile`."""
    shape = bench_shape(cfg)
    L, k, m, t, a, P = cfg["L"], cfg["k"], cfg["m"], cfg["t"], cfg["a"], cfg["prompt"]
    bounds = [(L - P) * (j + 1) // (k + 1) for j in range(k)]        # as bench_rollout._workload
    meta = MetaProverConfig(m=m, answer_max_tokens=a, prompt_branches=False)
    plain = Workload([[TraceScript(P + b + t, a)] for b in bounds for _ in range(m)], t, a, "bench (ii)")
    ii = _seconds(SimEngine, shape, profile, plain, num_blocks=k * m * (L + t + a) // 16 + 8 * k * m,
                  prefix_caching=False, max_new=a)
    trace = Workload([[TraceScript(L, 1)]], t, a, "bench (iii)")
    iii = _seconds(_ForkAll, shape, profile, trace, num_blocks=(L + k * m * (t + a)) // 16 + 8 * k * m, meta=meta,
                   fork_prompt=P, fork_bounds=bounds)
    B, N = cfg["batch"], cfg["new_tokens"]
    samp = Workload([[TraceScript(P, N)] for _ in range(B)], t, a, "bench sampling")
    s = _seconds(SimEngine, shape, profile, samp, num_blocks=B * ((P + N) // 16 + 2), max_new=N)
    meta_w = f"meta-prover on a trace L={L} k={k} m={m} t={t} a={a}"
    return [{"workload": meta_w, "method": "(ii) engine, no sharing", "predicted_seconds": ii},
            {"workload": meta_w, "method": "(iii) engine, forks", "predicted_seconds": iii},
            {"workload": f"sampling B={B} new={N}", "method": "engine", "predicted_seconds": s,
             "predicted_tokens_per_s": B * N / s}]


def predict_gpu_check(gpu: str = "h200", size: str = "gpu") -> list[dict]:
    if gpu == "cpu" and size == "gpu":
        size = "cpu-real"
    sizes = bench_sizes()
    if size not in sizes:
        raise ConfigError(f"--gpu-check: bench_rollout has no size {size!r} (sizes: {sorted(sizes)})")
    profile = get_profile(gpu, shape=bench_shape(sizes[size]))
    return [{**r, "device": profile.name, "size": size} for r in predict_bench_rollout(sizes[size], profile)]


def format_predictions(rows: list[dict]) -> str:
    lines = [f"plan predictions for bench_rollout --size {rows[0]['size']} on {rows[0]['device']}:",
             f"{'workload':<52}{'method':<28}{'predicted s':>12}"]
    for r in rows:
        lines.append(f"{r['workload']:<52}{r['method']:<28}{r['predicted_seconds']:>12.3f}")
    return "\n".join(lines)
