"""The plan as text: memory per GPU, then a step's parts (seconds, FLOPs, bytes, bound) for GRPO and MRT's variants."""
from __future__ import annotations

GB = 1e9


def _gb(x: float) -> str:
    return f"{x / GB:.2f} GB"


def _si(x: float) -> str:
    for unit, k in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.1f}{unit}"
    return f"{x:.0f}"


def format_plan(p: dict) -> str:
    m, mem, wl = p["model"], p["memory"], p["workload"]
    lines = [f"mrt.plan: {p['config']['mrt']} (GRPO twin: {p['config']['grpo']})",
             f"model {m['name']}: {m['params'] / 1e9:.3f}B params, {m['layers']} layers, d={m['hidden']}, "
             f"{m['heads']} heads / {m['kv_heads']} KV heads x {m['head_dim']}, vocab {m['vocab']}; "
             f"{p['kv_bytes_per_token'] / 1024:.1f} KiB of KV per token",
             f"device {p['gpus']} x {p['device']} ({p['profile']['memory_bytes'] / GB:.0f} GB, "
             + (f"{p['profile']['bandwidth'] / 1e9:.1f} GB/s, {p['profile']['fp32_flops'] / 1e9:.0f} GFLOP/s fp32"
                if p['device'] == 'cpu' else
                f"{p['profile']['bandwidth'] / 1e12:.2f} TB/s, {p['profile']['bf16_flops'] / 1e12:.0f} TFLOP/s bf16")
             + f"{', measured' if p['profile']['measured'] else ''}); training: {mem['strategy']}",
             "", "memory per GPU:"]
    rows = [("weights (training copy)", mem["weights"]), ("gradients", mem["gradients"]),
            ("optimizer states (AdamW)", mem["optimizer"]), ("generation copy (FSDP2)", mem["generation_copy"]),
            ("reference model", mem["reference_model"]), ("activations, 1 micro-batch (as configured)",
                                                         mem["activations"]),
            ("  with gradient checkpointing", mem["activations_checkpointed"]),
            ("  without", mem["activations_full"]), ("FSDP2 gathered layers", mem["fsdp_gathered"]),
            ("KV cache", mem["kv_cache"])]
    for name, v in rows:
        lines.append(f"  {name:<44}{_gb(v):>12}")
    lines.append(f"  {'total / capacity':<44}{_gb(mem['total']):>12} / {_gb(mem['capacity'])}"
                 f"{'' if mem['fits'] else '  DOES NOT FIT'}")
    lines.append(f"  KV cache: {mem['kv_blocks']:,} blocks, {mem['kv_tokens']:,} tokens: {p['max_concurrent_seqs']} "
                 f"sequences of {mem['seq_tokens']:,} tokens (mean prompt + max_new_tokens) at once")
    lines += ["", f"workload per rank ({wl['source']}): {wl['prompts_per_rank']} prompts x {wl['group_size']}, "
                  f"prompt ~{wl['mean_prompt']:.0f}, completion mean {wl['mean_completion']:.0f} / max "
                  f"{wl['max_completion']}, {wl['mean_boundaries']:.2f} boundaries a trace, termination text "
                  f"{wl['termination_tokens']} tokens, answers {wl['answer_tokens']:.0f} tokens"]
    sim = p["simulation"]
    lines.append(f"simulated with the engine's scheduler, {sim['coarsen']} decode token(s) per simulated step, "
                 f"decode {'in CUDA graphs' if sim['cuda_graphs'] else 'eager'}; "
                 + ", ".join(f"{k} {v['wall_seconds']:.1f} s ({v['engine']['preemptions']} preemptions, "
                             f"{v['graph_forwards']}/{v['forwards']} forwards in graphs)"
                             for k, v in sim.items() if isinstance(v, dict)))
    names = list(p["step_seconds"])
    lines += ["", "step seconds by part (one rank):",
              f"  {'part':<26}" + "".join(f"{n:>24}" for n in names)]
    parts = [k for k in p["step_seconds"]["grpo"] if k not in ("rollout", "update", "total")]
    for part in parts + ["rollout", "update", "total"]:
        cells = []
        for n in names:
            s = p["step_seconds"][n].get(part, 0.0)
            d = p["parts"][n].get(part)
            tag = f" {d['bound'][:3]}" if d and s > 0 else "    "
            cells.append(f"{s:>20.3f}{tag}")
        lines.append(f"  {part:<26}" + "".join(cells))
    lines.append(f"  {'MRT / GRPO':<26}{'':>24}" + "".join(f"{p['mrt_over_grpo_by_variant'][n]:>20.3f}    "
                                                        for n in names[1:]))
    lines.append("  (bound: com = compute, mem = memory, lau = kernel launches and the engine's host Python)")
    lines += ["", "FLOPs / bytes of MRT's parts (as configured):"]
    for part, d in p["parts"].get("mrt", p["parts"]["grpo"]).items():
        if d["seconds"] > 0:
            lines.append(f"  {part:<26}{_si(d['flops']):>10}FLOP {_si(d['bytes']):>10}B  bound: {d['bound']}")
    if p.get("meta_prover_hook_seconds") is not None:
        lines.append(f"meta-prover hook on the host (online segmentation): "
                     f"{p['meta_prover_hook_seconds']:.2f} s of the MRT step; MRT / GRPO without it: "
                     f"{p['mrt_over_grpo_without_hook_host']:.3f}")
    mp = p.get("meta_prefix_kv")
    if mp:
        lines.append(f"meta-prover prefix K/V reads: {_si(mp['bytes'])}B, {mp['seconds_at_bandwidth']:.2f} s at "
                     f"bandwidth = {100 * mp['fraction_of_mrt_step']:.1f}% of the MRT step"
                     + (" (more than a tenth: a shared-prefix decode attention pays)"
                        if mp["fraction_of_mrt_step"] > 0.1 else ""))
    return "\n".join(lines)
