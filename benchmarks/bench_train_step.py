"""One training step of mrt on the tiny model, its time split into generation, meta-prover, reward, advantages and
update, and peak memory; beside it, where `trl` imports, TRL's GRPOTrainer on the same model, prompts, group size and
lengths (GRPO mode, mrt also in GRPO mode for that row): seconds per step.

    python benchmarks/bench_train_step.py --size cpu          # the embedded default's step (B=8, G=8, L=96)
    python benchmarks/bench_train_step.py --size gpu          # larger batch on a GPU

Every part is the trainer's own (`Trainer._round_requests`, `_generate`, `_score`, `advantages`, `update`).
Generation alone is the same prompts and seeds through the engine without the meta-prover's hook; the meta-prover's
share is the rollout with the hook minus that. Each figure is the median over --repeats steps after one warm-up step.
Prints a table and writes bench_results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from mrt.config import load_config  # noqa: E402
from mrt.trainer import Trainer  # noqa: E402

SIZES = {
    "cpu": dict(prompts=8, group=8, max_new=96, repeats=3),
    "gpu": dict(prompts=64, group=8, max_new=96, repeats=5),
}


def peak_mem_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux


def one_step(tr: Trainer, step: int) -> dict:
    """A full training step with each part timed on its own, through the trainer's own step parts (so the benchmark
    times what a step runs): a round's requests, generation (without, then with the meta-prover's hook), scoring
    into the packed batch, advantages, the update."""
    examples, params, mp = tr.sampler.requests(tr.step_prompts(step), step, 0, 0)
    prompts = [e.prompt_ids for e in examples]
    sync = torch.cuda.synchronize if tr.dist.device.type == "cuda" else (lambda: None)

    sync()
    t0 = time.perf_counter()
    tr._generate(prompts, params, None)            # drops the prefix cache first, as every step does
    sync()
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    gen = tr._generate(prompts, params, mp)
    sync()
    t_roll = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch = tr.sampler.score(gen.outputs, examples, 0)
    t_rew = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch = batch.to(tr.dist.device)
    adv = tr.advantages(batch)
    sync()
    t_adv = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats, _ = tr.update(batch, adv)
    sync()
    t_upd = time.perf_counter() - t0
    meta = max(t_roll - t_gen, 0.0) if mp is not None else 0.0
    return {"generation": t_gen, "meta_prover": meta, "reward": t_rew, "advantages": t_adv, "update": t_upd,
            "step": (t_roll if mp is not None else t_gen) + t_rew + t_adv + t_upd,
            "completion_tokens": batch.num_completion_tokens, "loss": float(stats.loss)}


def bench_mrt(algo: str, size: dict, device: str | None) -> dict:
    args = ["--rl.algo", algo, "--optim.prompts_per_step", str(size["prompts"]), "--rollout.group_size",
            str(size["group"]), "--rollout.max_new_tokens", str(size["max_new"]), "--logging.out_dir",
            "/tmp/bench_train_step", "--eval.held_out", "1"]
    if algo == "grpo":
        args += ["--meta_prover.enabled", "false"]
    tr = Trainer(load_config(None, args))
    if device is not None and tr.dist.device.type != device:
        raise SystemExit(f"--size asks for {device} but the trainer runs on {tr.dist.device}")
    one_step(tr, 0)                                   # warm-up
    runs = [one_step(tr, s) for s in range(1, 1 + size["repeats"])]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["peak_mem_mb"] = peak_mem_mb(tr.dist.device)
    return med


def bench_trl(size: dict) -> dict | None:
    """TRL GRPOTrainer on the same model, prompts, group size and lengths; None when trl is not installed."""
    try:
        import trl  # noqa: F401
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        return None
    from mrt.config import resolve_path
    from mrt.tasks import arithmetic
    path = resolve_path("mrt:assets/tiny_model")
    tok = AutoTokenizer.from_pretrained(path)
    n = size["prompts"] * (size["repeats"] + 1)
    probs = arithmetic.generate_problems(n, seed=0)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p.text}], "answer": str(p.answer)}
                            for p in probs])

    def reward(completions, answer, **kw):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [arithmetic.verify(t, a) for t, a in zip(texts, answer)]

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    cfg = GRPOConfig(output_dir="/tmp/bench_trl", per_device_train_batch_size=size["prompts"] * size["group"],
                     num_generations=size["group"], max_completion_length=size["max_new"],
                     max_steps=size["repeats"] + 1, learning_rate=2e-4, logging_steps=1000, save_strategy="no",
                     report_to=[], temperature=1.0, use_cpu=not torch.cuda.is_available(), bf16=False,
                     gradient_accumulation_steps=1, beta=0.0, dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                    callbacks=[Timer()])
    t.train()
    return {"step": statistics.median(times[1:]) if len(times) > 1 else times[0],
            "peak_mem_mb": peak_mem_mb(torch.device("cuda" if torch.cuda.is_available() else "cpu"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL comparison")
    a = ap.parse_args()
    size = dict(SIZES[a.size])
    if a.repeats:
        size["repeats"] = a.repeats
    res = {"size": a.size, **size, "torch_threads": torch.get_num_threads(),
           "mrt": bench_mrt("mrt", size, "cuda" if a.size == "gpu" else None),
           "grpo": bench_mrt("grpo", size, "cuda" if a.size == "gpu" else None)}
    res["trl_grpo"] = None if a.no_trl else bench_trl(size)

    cols = ["generation", "meta_prover", "reward", "advantages", "update", "step"]
    print(f"one step: {size['prompts']} prompts x {size['group']} samples, <= {size['max_new']} new tokens "
          f"({torch.get_num_threads()} threads)")
    print(f"{'run':<22}" + "".join(f"{c + ' s':>14}" for c in cols) + f"{'peak MB':>10}")
    for name, key in (("mrt (MRT, dense)", "mrt"), ("mrt (GRPO)", "grpo")):
        r = res[key]
        print(f"{name:<22}" + "".join(f"{r[c]:>14.3f}" for c in cols) + f"{r['peak_mem_mb']:>10.0f}")
    if res["trl_grpo"] is not None:
        r = res["trl_grpo"]
        print(f"{'TRL GRPOTrainer':<22}" + "".join(f"{'':>14}" for _ in cols[:-1]) + f"{r['step']:>14.3f}"
              + f"{r['peak_mem_mb']:>10.0f}")
        print(f"speed-up of mrt (GRPO) over TRL GRPOTrainer: {r['step'] / res['grpo']['step']:.1f}x")
    else:
        why = "skipped (--no-trl)" if a.no_trl else "trl is not installed (optional: pip install trl)"
        print(f"TRL GRPOTrainer: {why}")
    os.makedirs(os.path.join(ROOT, "bench_results"), exist_ok=True)
    out = os.path.join(ROOT, "bench_results", "train_step.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
