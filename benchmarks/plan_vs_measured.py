"""The plan's `cpu` profile against what this machine measures, side by side in one run.

1. probe this machine before and after each measurement, at the measured model's shapes, and average the two
   (mrt.plan.profiles.probe_cpu: GEMM rate, weight-streaming rate, bandwidth, op cost, the engine's Python per step /
   sequence / hook);
2. the embedded default's step parts as `benchmarks/bench_train_step.py` measures them (its `one_step`: generation
   without the meta-prover's hook = GRPO's rollout, meta_prover = MRT's rollout minus that, update), each step's
   traces (prompt and completion lengths, episode boundaries, answer lengths) recorded from the engine's outputs and
   given to the plan as its workload (`--workload`): the plan prices the traces a step really had;
3. `bench_rollout.py --size cpu-real`'s engine rows (methods (ii), (iii), sampling), run here (or read with
   --rollout-json), each re-enacted on the plan's SimEngine with the benchmark's own requests and hook.
Prints predicted / measured for each and writes bench_results/plan_vs_measured.json. Aim: within +-30%.

    OMP_NUM_THREADS=1 python benchmarks/plan_vs_measured.py [--repeats 3] [--rollout-json FILE] [--skip-rollout]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mrt.meta_prover import BranchTag  # noqa: E402
from mrt.plan.gpu_check import bench_shape, predict_bench_rollout  # noqa: E402
from mrt.plan.planner import make_plan  # noqa: E402
from mrt.plan.profiles import probe_cpu  # noqa: E402

TRAIN_ARGS = dict(prompts=8, group=8, max_new=96)      # bench_train_step's --size cpu


def mean_profile(a, b):
    """The two probes' rates averaged (the load of a shared machine moves between them)."""
    import dataclasses
    return dataclasses.replace(a, **{f.name: (getattr(a, f.name) + getattr(b, f.name)) / 2
                                     for f in dataclasses.fields(a) if isinstance(getattr(a, f.name), float)})


# ---- 2. the embedded default's step -------------------------------------------------------------------------------
def workload_of(gen, prompts, termination_tokens: int) -> dict:
    """A generate call's outputs -> the plan's workload file content (traces in prompt-major order)."""
    traces, answers = [], []
    for prompt, req in zip(prompts, gen.outputs):
        for out in req.outputs:
            bounds = sorted({b.tag.position for b in out.branches if isinstance(b.tag, BranchTag)
                             and b.tag.kind == "episode" and 1 <= b.tag.position < len(out.token_ids)})
            traces.append({"prompt": len(prompt), "completion": len(out.token_ids), "boundaries": bounds})
            answers += [len(b.token_ids) for b in out.branches]
    return {"traces": traces, "termination_tokens": termination_tokens,
            "answer_tokens": statistics.mean(answers) if answers else None}


def measure_default(repeats: int, shape) -> tuple[list[dict], object]:
    """The measured steps, then their predictions with this machine probed before and after them."""
    before = probe_cpu(shape=shape)
    import bench_train_step as bts

    from mrt.config import load_config
    from mrt.trainer import Trainer
    overrides = ["--rl.algo", "mrt", "--optim.prompts_per_step", str(TRAIN_ARGS["prompts"]), "--rollout.group_size",
                 str(TRAIN_ARGS["group"]), "--rollout.max_new_tokens", str(TRAIN_ARGS["max_new"]),
                 "--logging.out_dir", "/tmp/plan_vs_measured", "--eval.held_out", "1"]
    tr = Trainer(load_config(None, overrides))
    captured = []
    orig = tr._generate

    def recording(prompts, params, hook):
        gen = orig(prompts, params, hook)
        captured.append((prompts, gen, hook))
        return gen
    tr._generate = recording
    bts.one_step(tr, 0)                                   # warm-up, as bench_train_step does
    rows, measured_steps = [], []
    for step in range(1, 1 + repeats):
        captured.clear()
        w0, c0 = time.perf_counter(), time.process_time()
        measured = bts.one_step(tr, step)
        share = (time.process_time() - c0) / (time.perf_counter() - w0)
        prompts, gen, _ = captured[-1]                    # the call with the meta-prover's hook
        measured_steps.append((step, measured, share, workload_of(gen, prompts, len(tr.termination_ids))))
    profile = mean_profile(before, probe_cpu(shape=shape))
    for step, measured, share, wl in measured_steps:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(wl, f)
        plan = make_plan(None, overrides, gpu="cpu", gpus=1, workload=f.name, profile=profile, coarsen=1,
                         variants=("default",))
        os.unlink(f.name)
        s = plan["step_seconds"]
        rows.append({"step": step, "cpu_share": share,
                     "measured_wall": {k: measured[k] for k in ("generation", "meta_prover", "update")},
                     "measured": {k: measured[k] * share for k in ("generation", "meta_prover", "update")},
                     "predicted": {"generation": s["grpo"]["rollout"], "meta_prover": s["mrt"]["rollout"]
                                   - s["grpo"]["rollout"], "update": s["mrt"]["update"]},
                     "traces": len(wl["traces"]), "mean_completion": statistics.mean(t["completion"]
                                                                                      for t in wl["traces"]),
                     "boundaries": sum(len(t["boundaries"]) for t in wl["traces"])})
    return rows, profile


# ---- 3. bench_rollout --size cpu-real ----------------------------------------------------------------------------
def predict_rollout_rows(profile) -> dict:
    """bench_rollout cpu-real's engine rows on the plan's SimEngine (mrt.plan.gpu_check: the benchmark's requests)."""
    from bench_rollout import SIZES
    return {r["method"]: r["predicted_seconds"] for r in predict_bench_rollout(SIZES["cpu-real"], profile)}


def measured_rollout_rows(path: str | None) -> tuple[dict, str, float]:
    """(seconds by method, the JSON, the run's CPU share: its processes' CPU time over wall time; 1 when read)."""
    share = 1.0
    if path is None:
        import resource
        path = os.path.join(ROOT, "bench_results", "bench_rollout_cpu_real.json")
        cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_rollout.py"), "--size", "cpu-real", "--only",
               "meta", "throughput", "--repeats", "1", "--out", path]
        r0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        share = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (time.perf_counter() - w0)
    with open(path) as f:
        data = json.load(f)
    out = {}
    for r in data["rows"]:
        if r["workload"].startswith("meta-prover on a trace") and r["method"].startswith(("(ii)", "(iii)")):
            out[r["method"]] = r["seconds"]
        if r["workload"].startswith("sampling") and r["method"] == "engine":
            out["engine"] = r["seconds"]
    return out, path, share


# ---- table -------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="measured steps of the embedded default (median)")
    ap.add_argument("--rollout-json", default=None, help="bench_rollout --size cpu-real JSON to read instead of "
                                                        "running it (~4 minutes)")
    ap.add_argument("--skip-rollout", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench_results", "plan_vs_measured.json"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    from mrt.plan.shape import load_shape
    load0 = os.getloadavg()
    rows = []
    steps, profile = measure_default(a.repeats, load_shape("mrt:assets/tiny_model", "float32"))
    for part in ("generation", "meta_prover", "update"):
        meas = statistics.median(r["measured"][part] for r in steps)
        wall = statistics.median(r["measured_wall"][part] for r in steps)
        pred = statistics.median(r["predicted"][part] for r in steps)
        rows.append({"what": f"embedded default {part} (bench_train_step --size cpu)", "predicted_s": pred,
                     "measured_s": meas, "measured_wall_s": wall,
                     "cpu_share": statistics.median(r["cpu_share"] for r in steps)})
    rollout_src, real_profile = None, None
    if not a.skip_rollout:
        from bench_rollout import SIZES
        real_shape = bench_shape(SIZES["cpu-real"])
        before = probe_cpu(shape=real_shape)
        meas, rollout_src, share = measured_rollout_rows(a.rollout_json)
        real_profile = mean_profile(before, probe_cpu(shape=real_shape))
        pred = predict_rollout_rows(real_profile)
        for name in pred:
            if name in meas:
                label = "sampling B=8 new=64, engine" if name == "engine" else f"meta-prover on a trace, {name}"
                rows.append({"what": f"bench_rollout cpu-real: {label}", "predicted_s": pred[name],
                             "measured_s": meas[name] * share, "measured_wall_s": meas[name], "cpu_share": share})
    for r in rows:
        r["ratio_cpu"] = r["predicted_s"] / max(r["measured_s"], 1e-9)
        r["ratio"] = r["predicted_s"] / max(r["measured_wall_s"], 1e-9)
        r["within_30pct"] = abs(r["ratio"] - 1) <= 0.3
    print(f"cpu profile (probed before and after, tiny model's shapes): GEMM {profile.fp32_flops / 1e9:.1f} GFLOP/s, weight stream "
          f"{profile.weight_rate / 1e9:.2f} GB/s, copy {profile.bandwidth / 1e9:.2f} GB/s, op {profile.launch_s * 1e6:.2f} us, engine host "
          f"{profile.host_step_s * 1e3:.2f} ms/step + {profile.host_seq_s * 1e6:.1f} us/seq, hook "
          f"{profile.hook_seq_s * 1e6:.1f} us/trace; {torch.get_num_threads()} thread(s); load average "
          f"{load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if real_profile is not None:
        print(f"cpu profile at the cpu-real shape: GEMM {real_profile.fp32_flops / 1e9:.1f} GFLOP/s, weight stream "
              f"{real_profile.weight_rate / 1e9:.2f} GB/s")
    print("measured: the benchmark's wall seconds; cpu s: wall x the run's CPU share (its CPU time / wall time), a "
          "diagnostic of contention (this VM's CPU-time accounting under load is not reliable: see docs/plan.md)")
    print(f"{'what':<70}{'predicted s':>12}{'measured s':>11}{'pred/meas':>10}{'cpu s':>9}{'pred/cpu':>9}")
    for r in rows:
        print(f"{r['what']:<70}{r['predicted_s']:>12.3f}{r['measured_wall_s']:>11.3f}{r['ratio']:>10.2f}"
              f"{r['measured_s']:>9.3f}{r['ratio_cpu']:>9.2f}{'' if r['within_30pct'] else ' *'}")
    print("* pred/meas outside +-30%")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"profile": profile.to_dict(),
                   "profile_cpu_real": None if real_profile is None else real_profile.to_dict(), "threads": torch.get_num_threads(), "load_average_start": load0,
                   "load_average_end": os.getloadavg(), "rows": rows, "default_steps": steps,
                   "rollout_json": rollout_src, "seconds": time.perf_counter() - t0}, f, indent=2)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
