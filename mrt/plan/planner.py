"""The plan of one config on one device kind: memory, and a step's time by part for MRT and its GRPO twin.

`make_plan(...)` returns one JSON-ready dict (the `--json` output). Both algorithms run the same sampled traces, so
MRT / GRPO isolates what the meta-prover adds (as `benchmarks/bench_train_step.py` measures it: the rollout with the
hook minus without). MRT is priced three ways (step.VARIANTS): as configured (branches fork from the trace's KV
cache), without prefix sharing, and with a shared-prefix decode attention for fork groups.
"""
from __future__ import annotations

import math

from ..config import ConfigError
from .memory import plan_memory
from .profiles import DeviceProfile, get_profile
from .shape import load_shape
from .step import VARIANTS, auto_coarsen, engine_has_cuda_graphs, plan_step
from .twin import config_pair
from .workload import TraceDistribution, load_workload


def make_plan(config: str | None, overrides: list[str], *, gpu: str = "h100", gpus: int | None = None,
              metrics: str | None = None, workload: str | None = None, coarsen: int | None = None, seed: int = 0,
              variants: tuple[str, ...] = VARIANTS, profile: DeviceProfile | None = None,
              cuda_graphs: bool | None = None) -> dict:
    if gpus is None:
        gpus = 1 if gpu == "cpu" else 8
    if gpus < 1:
        raise ConfigError(f"--gpus: must be >= 1, got {gpus}")
    if coarsen is not None and coarsen < 1:
        raise ConfigError(f"--coarsen: must be >= 1, got {coarsen}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"variants: unknown {bad}; known: {list(VARIANTS)}")
    mrt_cfg, grpo_cfg, sources = config_pair(config, overrides)
    shape = load_shape(mrt_cfg.model.path, mrt_cfg.model.dtype)
    profile = profile or get_profile(gpu, shape=shape)
    prompts = math.ceil(mrt_cfg.optim.prompts_per_step / gpus)
    if workload is not None:
        wl = load_workload(workload, mrt_cfg, prompts)
    else:
        dist = TraceDistribution.from_metrics(mrt_cfg, metrics) if metrics else TraceDistribution.from_config(mrt_cfg)
        wl = dist.sample(mrt_cfg, prompts, seed=seed)
    mean_prompt = wl.summary()["mean_prompt"]
    mem = plan_memory(mrt_cfg, shape, profile, gpus, mean_prompt)
    k = coarsen or auto_coarsen(mrt_cfg.rollout.max_new_tokens)
    graphs = (engine_has_cuda_graphs() if cuda_graphs is None else cuda_graphs) and profile.name != "cpu"
    plans = {"grpo": plan_step(grpo_cfg, shape, profile, wl, mem, gpus, meta=False, coarsen=k, seed=seed,
                               cuda_graphs=graphs)}
    names = {"default": "mrt", "no_prefix_sharing": "mrt_no_prefix_sharing", "cascade": "mrt_cascade"}
    for v in variants:
        plans[names[v]] = plan_step(mrt_cfg, shape, profile, wl, mem, gpus, meta=True, variant=v, coarsen=k,
                                    seed=seed, cuda_graphs=graphs)
    g = plans["grpo"].seconds
    ratios = {name: p.seconds / g for name, p in plans.items() if name != "grpo"}
    mrt = plans.get("mrt")
    prefix_s = mrt.rollout.prefix_kv_bytes / profile.byte_rate if mrt else None
    return {
        "config": sources,
        "device": profile.name, "gpus": gpus, "profile": profile.to_dict(),
        "model": shape.to_dict(),
        "params": shape.params, "weights_bytes": shape.weights_bytes, "kv_bytes_per_token": shape.kv_bytes_per_token,
        "max_concurrent_seqs": mem.max_concurrent_seqs,
        "memory": mem.to_dict(),
        "workload": {**wl.summary(), "prompts_per_rank": prompts, "group_size": mrt_cfg.rollout.group_size},
        "simulation": {"coarsen": k, "cuda_graphs": graphs,
                       **{name: {"wall_seconds": p.rollout.sim_seconds, "forwards": p.rollout.forwards,
                                 "graph_forwards": p.rollout.graph_steps,
                                               "engine": p.rollout.stats} for name, p in plans.items()}},
        "step_seconds": {name: p.seconds_by_part() for name, p in plans.items()},
        "parts": {name: {k2: part.to_dict() for k2, part in p.parts.items()} for name, p in plans.items()},
        "mrt_over_grpo": ratios.get("mrt"),
        "mrt_over_grpo_by_variant": ratios,
        # The meta-prover hook's host time (Python per trace and step, inside the rollout parts' launch seconds),
        # and MRT / GRPO were it free (detokenising in batches or off the step's critical path).
        "meta_prover_hook_seconds": None if mrt is None else mrt.rollout.hook_seconds,
        "mrt_over_grpo_without_hook_host": None if mrt is None else (mrt.seconds - mrt.rollout.hook_seconds) / g,
        "meta_prefix_kv": None if mrt is None else {
            "bytes": mrt.rollout.prefix_kv_bytes, "seconds_at_bandwidth": prefix_s,
            "fraction_of_mrt_step": prefix_s / mrt.seconds,
            "cascade_saved_bytes": plans["mrt_cascade"].rollout.cascade_saved_bytes if "mrt_cascade" in plans
            else None},
    }
