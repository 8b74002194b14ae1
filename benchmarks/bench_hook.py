"""Host time of the engine's generate-hook path per trace per engine step, against the trace's length.

At every engine step the engine shows the hook each trace that sampled (`Engine._call_hook`). What that costs on the
host, with no model, is timed here on the engine's own `_call_hook` and real `Sequence`s: `--traces` traces of
`prompt + L` tokens (L from `--lengths`, 1k-16k), each then grown one token a step for `--steps` steps, the hook
called after each step exactly as the engine calls it (a stub stands in for the engine's fork, which no row reaches).
Rows, one per hook:
- `view`: a hook that reads nothing (the engine's part alone: building what the hook sees);
- `budget`: `mrt.eval.budget_forcing.BudgetHook` with budgets beyond the timed window (it never forks here);
- `meta`: the trainer's `MetaProver` with the R1 preset's markers segmenter (`Wait`, ... min 3 paragraphs, 10 episodes,
  end `</think>`) on the real Qwen2.5 BPE tokenizer (tests/fixtures), no bare-prompt branches; the text is paragraphs
  with no marker, so the online segmenter works on every token and never forks.
The meta hook's stream is first fed the whole trace (untimed), so the timed steps are its steady state at length L.
Figures: the minimum over `--repeats` timed windows of (window seconds / (steps x traces)), in microseconds: the
machine is shared, and the minimum is the figure least disturbed by other work.

    OMP_NUM_THREADS=1 python benchmarks/bench_hook.py [--out bench_results/hook.json] [--baseline OLD.json]

With `--baseline` (this script's JSON from another version of the engine, e.g. before a change) the table shows both
and their ratio. Prints a table and writes JSON (default bench_results/hook.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN_TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "Qwen2.5-Math-1.5B")
PROMPT_TOKENS = 166          # the paper preset's prompts, about (docs/plan.md)
# Paragraphs of a reasoning trace that open with no marker: the segmenter sees a new unit every paragraph and decides
# it, as it does on a real trace between boundaries.
PARAGRAPHS = [
    "Let me compute the sum of the first {i} odd numbers: 1 + 3 + 5 + ... gives {sq}, since each step adds 2k + 1.",
    "So the value at step {i} is {sq}, and the difference from the previous one is {d}.",
    "Then we check that {sq} is a perfect square: its root is {i}, an integer, as expected.",
    "Now consider the remainder of {sq} modulo 7, which is {r}; the pattern repeats every 7 terms.",
]


def trace_text(num_chars: int) -> str:
    out, i = [], 1
    while sum(len(p) for p in out) < num_chars:
        out.append(PARAGRAPHS[i % len(PARAGRAPHS)].format(i=i, sq=i * i, d=2 * i - 1, r=(i * i) % 7) + "\n\n")
        i += 1
    return "".join(out)


def trace_ids(tok, num_tokens: int) -> list[int]:
    ids = tok(trace_text(num_tokens * 5), add_special_tokens=False)["input_ids"]
    while len(ids) < num_tokens:
        ids = ids + ids
    return ids[:num_tokens]


def make_hook(kind: str, tok, max_tokens: int):
    from mrt.episodes import R1_MARKERS, markers_segmenter
    from mrt.eval.budget_forcing import BudgetHook
    from mrt.meta_prover import MetaProver
    from mrt.rollout import SamplingParams

    if kind == "view":
        return lambda view: None
    meta = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=32, n=8)
    term = tok("\n\n**Final Answer**\n\\boxed{", add_special_tokens=False)["input_ids"]
    if kind == "budget":
        return BudgetHook([max_tokens + 1, max_tokens + 2], term, meta, stop_token_ids=[tok.eos_token_id])
    if kind == "meta":
        seg = markers_segmenter(R1_MARKERS, min_paragraphs=3, max_episodes=10, end_text="</think>")
        return MetaProver(seg, tok, termination_ids=term, m=8, answer_max_tokens=32, temperature=0.6, top_p=0.95,
                          max_tokens=max_tokens + 1, stop_token_ids=[tok.eos_token_id], prompt_branches=False)
    raise ValueError(f"unknown hook {kind!r}")


def time_hook(kind: str, tok, length: int, steps: int, traces: int, repeats: int) -> dict:
    """Seconds per trace per step of Engine._call_hook with `kind`'s hook on traces of PROMPT_TOKENS + length."""
    from mrt.rollout import SamplingParams, Sequence
    from mrt.rollout.engine import Engine
    from mrt.rollout.stats import GenerationStats

    ids = trace_ids(tok, length + steps * repeats)
    prompt = trace_ids(tok, PROMPT_TOKENS)
    params = SamplingParams(temperature=1.0, max_tokens=length + steps * repeats + 1, stop_token_ids=[])
    hook = make_hook(kind, tok, length + steps * repeats)
    seqs = []
    for j in range(traces):
        seq = Sequence(list(prompt), params, request_index=j, sample_index=0)
        seq.token_ids.extend(ids[:length])
        seq.num_new_tokens = length                # the hook catches up on the whole trace once, untimed
        seqs.append(seq)
    engine = Engine.__new__(Engine)                # _call_hook needs no model; no row forks
    engine._fork = lambda parent, req, stats: None
    stats = GenerationStats()
    engine._call_hook(hook, seqs, stats)
    best, pos = float("inf"), length
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            tok_id = ids[pos]
            for seq in seqs:
                seq.append_token(tok_id, 0.0)
                seq.num_new_tokens = 1
            engine._call_hook(hook, seqs, stats)
            pos += 1
        best = min(best, (time.perf_counter() - t0) / (steps * traces))
    return {"hook": kind, "length": length, "seconds_per_trace_step": best}


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384", help="trace lengths (completion tokens)")
    ap.add_argument("--hooks", default="view,budget,meta")
    ap.add_argument("--steps", type=int, default=200, help="engine steps per timed window")
    ap.add_argument("--traces", type=int, default=8, help="traces shown to the hook per step")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows (the minimum is reported)")
    ap.add_argument("--tokenizer", default=QWEN_TOKENIZER)
    ap.add_argument("--label", default=None, help="what this run measures (default: the git revision)")
    ap.add_argument("--baseline", default=None, help="this script's JSON of another version, shown beside")
    ap.add_argument("--out", default=os.path.join("bench_results", "hook.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from mrt.models.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    lengths = [int(x) for x in args.lengths.split(",")]
    hooks = [h for h in args.hooks.split(",") if h]
    rows = [time_hook(h, tok, n, args.steps, args.traces, args.repeats) for h in hooks for n in lengths]
    base = {}
    if args.baseline:
        with open(args.baseline) as f:
            old = json.load(f)
        base = {(r["hook"], r["length"]): r["seconds_per_trace_step"] for r in old["results"]}
    head = f"{'hook':<8}{'length':>8}{'us / trace / step':>20}"
    if base:
        head += f"{'baseline us':>14}{'baseline / now':>16}"
    print(head)
    for r in rows:
        line = f"{r['hook']:<8}{r['length']:>8}{r['seconds_per_trace_step'] * 1e6:>20.2f}"
        b = base.get((r["hook"], r["length"]))
        if b is not None:
            r["baseline_seconds_per_trace_step"] = b
            line += f"{b * 1e6:>14.2f}{b / r['seconds_per_trace_step']:>16.1f}"
        print(line)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"label": args.label or _git_rev(), "steps": args.steps, "traces": args.traces,
                   "repeats": args.repeats, "prompt_tokens": PROMPT_TOKENS, "tokenizer": args.tokenizer,
                   "python": platform.python_version(), "baseline": args.baseline, "results": rows}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
