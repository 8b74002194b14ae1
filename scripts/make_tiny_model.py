"""Make the tiny models the presets ship (Hugging Face layout, LlamaForCausalLM): the embedded default's,
mrt/assets/tiny_model (`--task countdown`, the default), and chain arithmetic's, mrt/assets/tiny_arithmetic_model
(`--task arithmetic`, described first: countdown builds on it).

1. A word-level tokenizer (`tokenizers`) over the chain-arithmetic traces of `mrt.tasks.arithmetic`: every number
   0..199 is one token (with and without a leading space), words carry their leading space, blank lines are one
   token, so a trace is ~40-90 tokens; the decoder fuses tokens back into the exact text. A chat template
   `Question : <problem>\\nAnswer :\\n` is stored with it.
2. A small Llama (GQA, tied embeddings, width 128, ~1.05M parameters) pre-trained by supervised learning on reference traces
   (slips and "Wait" corrections included) on the CPU, with greedy held-out accuracy checked every `--eval-every`
   steps; training stops at the first check at or above `--target-acc` (default 0.4), so RL starts from a model that is
   right on some problems and wrong on others.

Run: `python scripts/make_tiny_model.py --task arithmetic` (about 5 minutes on 2 CPU cores). Deterministic for a given --seed and thread
count.

`--task countdown` (the default) makes mrt/assets/tiny_model: the same tokenizer rules with the words of
`mrt.tasks.countdown`, the same Llama with 512 positions (room for budget forcing past the training budget), SFT on
its random-search traces (failed attempts, checks, "Wait", backtracks, a final answer) for `--steps` or
`--max-minutes`, whichever ends first; the checks measure sampled held-out accuracy and the share of written steps
whose arithmetic is right, and no target stops it (the base model should imitate the search, not beat it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mrt.tasks import arithmetic as task  # noqa: E402
from mrt.tasks import countdown  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mrt", "assets", "tiny_arithmetic_model")
OUT_COUNTDOWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mrt", "assets", "tiny_model")
ARITHMETIC_WORDS = ["Question", "Answer", "So", "the", "answer", "is", "The", "Wait", "let", "me", "check", "redo",
                    "it", "Time", "up", "final", "step", "by"]
SPECIALS = ["<pad>", "<unk>", "<eos>"]
# Longest alternatives first: \boxed{ as one token, words and numbers with an optional leading space, runs of
# newlines, single other characters with an optional leading space, stray spaces.
PATTERN = r" ?\\boxed\{| ?[A-Za-z]+| ?[0-9]+|\n+| ?[^\sA-Za-z0-9]| +"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Question : ' + message['content'] + '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer :\n' }}{% endif %}"
)


def prompt_text(problem) -> str:
    # Identical to CHAT_TEMPLATE applied to [{"role": "user", "content": problem.text}] with a generation prompt.
    return f"Question : {problem.text}\nAnswer :\n"


def build_tokenizer(extra_words=(), model_max_length: int = 256):
    """The word-level tokenizer: the arithmetic words plus extra_words (a task's own words), numbers 0..199,
    punctuation; without extra_words, the vocabulary of mrt/assets/tiny_arithmetic_model."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ARITHMETIC_WORDS + [w for w in extra_words if w not in ARITHMETIC_WORDS]
    vocab = list(SPECIALS)
    for w in words:
        vocab += [w, " " + w]
    for n in range(200):
        vocab += [str(n), f" {n}"]
    for c in "+-=.,:;?!()*/{}[]\\":
        vocab += [c, " " + c]
    vocab += ["\\boxed{", " \\boxed{", "\n", "\n\n", " ", "  "]
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                                 model_max_length=model_max_length)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(vocab_size: int, eos_id: int, pad_id: int, hidden: int = 128, max_positions: int = 256):
    """hidden d: the MLP is 4d wide and the 4 query / 2 KV heads are d/4 each (d=128: the shipped 1.05M model)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    if hidden % 8:
        raise ValueError(f"--hidden must be a multiple of 8, got {hidden}")
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=max_positions, rms_norm_eps=1e-6, rope_theta=10000.0,
                      tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=eos_id, pad_token_id=pad_id, attention_bias=False, mlp_bias=False)
    return LlamaForCausalLM(cfg)


def encode_batch(tok, problems, rng, device="cpu", trace_fn=task.reference_trace):
    """Right-padded (ids, labels): labels are -100 on the prompt and padding, so only the trace is learned."""
    rows = []
    for p in problems:
        prompt = tok(prompt_text(p), add_special_tokens=False)["input_ids"]
        trace = tok(trace_fn(p, rng), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((prompt, trace))
    ids, labels = _pad(rows, tok)
    return ids.to(device), labels.to(device)


def sft_step(model, opt, sched, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One supervised step on (ids, labels) (B, T): cross-entropy on the trace tokens, gradients clipped to norm 1."""
    loss = model(input_ids=ids, labels=labels).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss


def _pad(rows: list[tuple[list[int], list[int]]], tok) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, trace) id lists -> right-padded (ids, labels) (B, T): labels -100 on the prompt and padding."""
    T = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        ids[i, :len(a) + len(b)] = torch.tensor(a + b)
        labels[i, len(a):len(a) + len(b)] = torch.tensor(b)
    return ids, labels


@torch.no_grad()
def greedy_accuracy(model, tok, problems, max_new_tokens=120) -> float:
    """Held-out accuracy with greedy decoding (left-padded batch generation)."""
    model.eval()
    tok.padding_side = "left"
    enc = tok([prompt_text(p) for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train()
    return sum(task.verify(t, p.answer) for t, p in zip(texts, problems)) / len(problems)


def save(model, tok, args, step: int, acc: float, info: dict | None = None) -> None:
    """Write the HF folder to a temporary name, then swap it in."""
    tmp = args.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "training_info.json"), "w") as f:
        json.dump(info if info is not None else
                  {"steps": step, "heldout_greedy_accuracy": acc, "seed": args.seed, "batch": args.batch,
                   "lr": args.lr, "task": "mrt.tasks.arithmetic"}, f, indent=1)
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)


_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+) \.")
_CHECK = re.compile(r"(\d+) \.\n(\d+) is (not )?(\d+) \.")


def trace_stats(text: str, problem) -> tuple[int, int, int, int]:
    """(steps with right arithmetic, steps, right checks, checks) of a countdown trace: a step `a op b = r .` is
    right when r is a op b; a check `v is [not] T .` when v is the line above's result, T the target, and `not` is
    there exactly when v != T."""
    steps = _STEP.findall(text)
    ok = sum(countdown.apply_op(int(a), op, int(b)) == int(r) for a, op, b, r in steps)
    checks = _CHECK.findall(text)
    ok_checks = sum(v == r and int(t) == problem.target and bool(neg) == (int(v) != problem.target)
                    for r, v, neg, t in checks)
    return ok, len(steps), ok_checks, len(checks)


@torch.no_grad()
def sampled_eval(model, tok, problems, max_new_tokens: int, temperature: float = 0.7, seed: int = 0) -> dict:
    """Sampled held-out accuracy (whole traces within max_new_tokens) and the share of right steps and checks."""
    model.eval()
    tok.padding_side = "left"
    torch.manual_seed(seed)
    enc = tok([prompt_text(p) for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=1.0,
                         top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train()
    stats = [trace_stats(t, p) for t, p in zip(texts, problems)]
    s_ok, s_n, c_ok, c_n = (sum(x[i] for x in stats) for i in range(4))
    return {"accuracy": sum(countdown.verify(t, p) for t, p in zip(texts, problems)) / len(problems),
            "step_accuracy": s_ok / max(s_n, 1), "check_accuracy": c_ok / max(c_n, 1),
            "attempts": sum(t.count("\n\nWait") + 1 for t in texts) / len(texts)}


def bucketed_batches(tok, problems, rng, batch: int, trace_fn, buckets: int = 8):
    """Endless (ids, labels) batches of traces of similar length: `buckets` batches' worth of traces are drawn, sorted
    by length, cut into batches and shuffled, so padding wastes little (search traces run from 1 to 10 attempts)."""
    while True:
        rows = []
        for p in rng.sample(problems, batch * buckets):
            prompt = tok(prompt_text(p), add_special_tokens=False)["input_ids"]
            trace = tok(trace_fn(p, rng), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((prompt, trace))
        rows.sort(key=lambda r: len(r[0]) + len(r[1]))
        chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _pad(chunk, tok)


def train_countdown(args) -> None:
    """SFT on countdown search traces (see the module docstring), for --steps or --max-minutes."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = build_tokenizer(countdown.WORDS, model_max_length=args.max_positions)
    model = build_model(len(tok), tok.eos_token_id, tok.pad_token_id, args.hidden, args.max_positions)
    print(f"vocab {len(tok)}, parameters {sum(p.numel() for p in model.parameters()):,}")
    train = countdown.generate_problems(len([p for p in countdown.problem_pool()
                                             if countdown.split_of(p.text) == "train"]), seed=args.seed)
    heldout = countdown.generate_problems(args.eval_problems, seed=args.seed + 1, split="heldout")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    # 50 warm-up steps, then a cosine from lr to lr / 10 over --steps (as for arithmetic).
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s / args.steps, 1.0)))))
    # The time limit is on this process's CPU time: with one thread that is the wall time of an idle machine, and it
    # does not depend on what else shares the cores.
    t0, c0, ev, step = time.time(), time.process_time(), {}, 0

    def info(step):
        return {"task": "mrt.tasks.countdown", "steps": step, "seconds": round(time.process_time() - c0, 1),
                "wall_seconds": round(time.time() - t0, 1),
                "threads": args.threads, "seed": args.seed, "batch": args.batch, "lr": args.lr,
                "hidden": args.hidden, "max_positions": args.max_positions,
                "parameters": sum(p.numel() for p in model.parameters()),
                "heldout_sampled": {"problems": len(heldout), "max_new_tokens": args.eval_tokens,
                                    "temperature": 0.7, **ev}}

    model.train()
    batches = bucketed_batches(tok, train, rng, args.batch, countdown.search_trace)
    for step in range(1, args.steps + 1):
        loss = sft_step(model, opt, sched, *next(batches))
        last = step == args.steps or time.process_time() - c0 > 60 * args.max_minutes
        if step % args.eval_every == 0 or last:
            ev = sampled_eval(model, tok, heldout, args.eval_tokens, seed=args.seed)
            print(f"step {step:5d}  loss {loss.item():.4f}  " + "  ".join(f"{k} {v:.3f}" for k, v in ev.items())
                  + f"  cpu {time.process_time() - c0:.0f}s  wall {time.time() - t0:.0f}s", flush=True)
            save(model, tok, args, step, ev["accuracy"], info(step))
        if last:
            break
    print(f"saved {args.out}: {step} steps in {time.process_time() - c0:.0f}s CPU ({time.time() - t0:.0f}s wall), "
          f"held-out sampled {ev}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["arithmetic", "countdown"], default="countdown",
                    help="arithmetic: mrt/assets/tiny_arithmetic_model (the defaults below); countdown: "
                         "mrt/assets/tiny_model (defaults: --steps 1500 --batch 32 --eval-every 250 "
                         "--eval-problems 128 --max-minutes 14)")
    ap.add_argument("--out", default=None, help="output folder (default: the task's asset folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="most optimizer steps (arithmetic: 3000)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=None, help="(arithmetic: 50)")
    ap.add_argument("--eval-problems", type=int, default=None, help="(arithmetic: 100)")
    ap.add_argument("--target-acc", type=float, default=0.4, help="stop at the first check at or above this")
    ap.add_argument("--threads", type=int, default=None, help="(arithmetic: 2; countdown: 1)")
    ap.add_argument("--hidden", type=int, default=128,
                    help="model width d (128: the shipped 1.05M-parameter model; 64: a 0.25M one)")
    ap.add_argument("--max-minutes", type=float, default=14.0, help="countdown: stop after this much CPU time")
    ap.add_argument("--max-positions", type=int, default=512, help="countdown: the model's context length")
    ap.add_argument("--eval-tokens", type=int, default=200, help="countdown: completion budget of the checks")
    args = ap.parse_args(argv)
    if args.task == "countdown":
        args.out = args.out or OUT_COUNTDOWN
        args.steps = args.steps or 1500
        args.eval_every = args.eval_every or 250
        args.eval_problems = args.eval_problems or 128
        args.threads = args.threads or 1
        return train_countdown(args)
    args.out = args.out or OUT
    args.steps = args.steps or 3000
    args.eval_every = args.eval_every or 50
    args.eval_problems = args.eval_problems or 100
    args.threads = args.threads or 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    tok = build_tokenizer()
    model = build_model(len(tok), tok.eos_token_id, tok.pad_token_id, args.hidden)
    print(f"vocab {len(tok)}, parameters {sum(p.numel() for p in model.parameters()):,}")
    train = task.generate_problems(20000, seed=args.seed, split="train")
    heldout = task.generate_problems(args.eval_problems, seed=args.seed + 1, split="heldout")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    t0, acc = time.time(), 0.0
    model.train()
    for step in range(1, args.steps + 1):
        loss = sft_step(model, opt, sched, *encode_batch(tok, rng.sample(train, args.batch), rng))
        if step % args.eval_every == 0:
            acc = greedy_accuracy(model, tok, heldout)
            print(f"step {step:5d}  loss {loss.item():.4f}  held-out greedy accuracy {acc:.3f}  "
                  f"{time.time() - t0:.0f}s", flush=True)
            save(model, tok, args, step, acc)   # a snapshot at every check: an interrupted run leaves a model
            if acc >= args.target_acc:
                break

    save(model, tok, args, step, acc)
    print(f"saved {args.out}: {step} steps, held-out greedy accuracy {acc:.3f}")

if __name__ == "__main__":
    main()
