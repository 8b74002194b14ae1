"""The paper preset end to end on real-shaped inputs: a small random-weight Qwen2 with the real Qwen2.5-Math tokenizer
(its vocabulary and chat template), MATH training rows, AIME 2024 for evaluation.

Random weights never write R1 markers or `</think>`, so a scripted sampler writes the traces: every non-branch
sequence's tokens are replaced, as they are drawn, by an R1-style trace whose final answer is right for sample 0 and
wrong for the others, and every meta-prover branch answers right. The engine, the KV cache, the segmenter, the
meta-prover forks, math-verify, the update and the checkpoint all run as in a real run on those tokens; the preset's
`rl.recompute_old_logp` takes the old log-probs from the training forward, so the scripted tokens' log-probs are real.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from mrt.config import load_config
from mrt.rollout.sequence import Sequence

from .real_models import ROOT, fixture_file, random_qwen2_folder

R1_PRESET = os.path.join(ROOT, "configs", "r1_distill_qwen_1p5b_mrt.yaml")
TRACE = ("<think>\nLet me add the parts.\n\nWait, check the sum.\n\nAlternatively, count again.\n\nSo it is "
         "{answer}.\n</think>\n\nThe answer is $\\boxed{{{answer}}}$.\n\nWait, that is all.")
MARKERS_IN_THINKING = ("Wait", "Alternatively")


class Script:
    """Scripted tokens for the engine's sequences, keyed by which prompt they continue (its answer)."""

    def __init__(self, tokenizer, eos: int):
        self.tok, self.eos = tokenizer, eos
        self.answers: dict[tuple[int, ...], str] = {}

    def add(self, prompt_ids, answer) -> None:
        self.answers[tuple(prompt_ids)] = str(answer)

    def answer_of(self, seq: Sequence) -> str | None:
        for p, a in self.answers.items():
            if tuple(seq.token_ids[:len(p)]) == p:
                return a
        return None

    def trace(self, answer: str) -> list[int]:
        return self.tok(TRACE.format(answer=answer), add_special_tokens=False)["input_ids"] + [self.eos]

    def tokens_for(self, seq: Sequence) -> list[int] | None:
        answer = self.answer_of(seq)
        if answer is None:
            return None
        if seq.is_branch:      # a meta-prover answer after the termination text "... $\boxed{"
            return self.tok(f"{answer}}}$.", add_special_tokens=False)["input_ids"] + [self.eos]
        return self.trace(answer if seq.sample_index == 0 else answer + "1")


@pytest.fixture
def script(monkeypatch):
    holder = {}
    real = Sequence.append_token

    def append_token(self, token_id, logprob):
        s = holder.get("script")
        want = s.tokens_for(self) if s is not None else None
        k = self.num_output_tokens
        real(self, want[k] if want is not None and k < len(want) else token_id, logprob)

    monkeypatch.setattr(Sequence, "append_token", append_token)
    return holder


def _rows(src: str, n: int, out) -> str:
    with open(src) as f:
        out.write_text("".join(next(f) for _ in range(n)))
    return str(out)


def test_r1_preset_trains_and_evaluates_on_real_shaped_inputs(tmp_path_factory, tmp_path, script):
    from mrt.trainer import Trainer
    model = random_qwen2_folder(tmp_path_factory)
    train = _rows(fixture_file("train_math.jsonl"), 6, tmp_path / "train.jsonl")
    aime = fixture_file("aime24.jsonl")
    cfg = load_config(R1_PRESET, [
        "--model.path", model, "--model.dtype", "float32", "--model.gradient_checkpointing", "false",
        "--data.path", train, "--eval.path", aime, "--eval.held_out", "2", "--eval.samples", "1",
        "--eval.max_new_tokens", "80", "--rollout.max_new_tokens", "80", "--rollout.group_size", "2",
        "--rollout.num_blocks", "256", "--rollout.max_num_batched_tokens", "2048", "--optim.prompts_per_step", "2",
        "--optim.steps", "2", "--optim.micro_batch_tokens", "4096", "--meta_prover.m", "2",
        "--meta_prover.answer_max_tokens", "8", "--episodes.min_paragraphs", "1", "--checkpoint.every", "0",
        "--logging.out_dir", str(tmp_path / "run"), "--logging.tensorboard", "false", "--logging.plots", "false",
        "--logging.progress_bar", "false"])
    assert cfg.meta_prover.prompt_branches and cfg.rl.recompute_old_logp and cfg.reward == "math"
    tr = Trainer(cfg)
    assert len(tr.tokenizer) == 151665 and tr.model.config.vocab_size == 151936
    s = script["script"] = Script(tr.tokenizer, tr.tokenizer.eos_token_id)
    for e in list(tr.train_data.examples) + list(tr.eval_data):
        s.add(e.prompt_ids, e.answer)
    assert "<|im_start|>user" in tr.train_data[0].prompt_text          # the real chat template

    batch, info = tr.rollout(0)
    assert len(batch) == 4 and info["engine"]["branches"] > 0
    for t in batch.traces:
        text = tr.tokenizer.decode(t.completion_ids)
        assert "</think>" in text and t.finish_reason == "stop"
        # Episodes start at the two markers inside the thinking block, none after </think>.
        assert len(t.boundaries) == 2, (t.boundaries, text)
        for b, marker in zip(t.boundaries, MARKERS_IN_THINKING):
            assert tr.tokenizer.decode(t.completion_ids[b:]).startswith(marker)
        assert t.J == [1.0, 1.0] and t.J_prompt == 1.0        # J_-1 estimated from the bare prompt
    # math-verify: sample 0 boxes the row's answer, sample 1 a wrong one.
    assert [t.correct for t in batch.traces] == [1.0, 0.0, 1.0, 0.0]

    out = tr.train()
    train_recs = [r for r in out["records"] if r["kind"] == "train"]
    assert len(train_recs) == 2 and all(r["accuracy"] == 0.5 and r["episodes"] == 2.0 for r in train_recs)
    assert all(abs(r["approx_kl_old"]) > 0 for r in train_recs)   # scripted tokens: the engine's log-probs differ
    assert out["after"]["eval/accuracy"] == 1.0                    # greedy eval traces: sample 0's script

    # The checkpoint is a Hugging Face folder that transformers loads, with the real tokenizer.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ckpt = os.path.join(cfg.checkpoint_dir, "step_00000002")
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(hf.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert len(AutoTokenizer.from_pretrained(ckpt)) == 151665

    # python -m mrt.eval on AIME 2024 with the trained checkpoint, the same R1 termination text by name.
    from mrt.eval.__main__ import main as eval_main
    from mrt.eval.config import parse_args
    from mrt.eval.evaluate import format_prompts
    argv = ["--model", f"mrt={ckpt}", "--data", aime, "--limit", "2", "--budgets", "40,80", "--samples", "2",
            "--termination-text", "r1", "--answer-tokens", "8", "--curve-every", "40", "--out",
            str(tmp_path / "eval"), "--no-progress"]
    ecfg = parse_args(argv)
    rows = [json.loads(line) for line in open(aime)][:2]
    for ids, row in zip(format_prompts(tr.tokenizer, [r["problem"] for r in rows], ecfg), rows):
        s.add(ids, row["answer"])
    assert eval_main(argv) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    r = res["results"][0]
    assert r["num_problems"] == 2 and r["pass@1"] == 0.5          # sample 0 right, sample 1 wrong, by math-verify
    # At 40 tokens the traces are cut and forced to answer (the branches answer right); by 80 they have ended (about
    # 50 tokens) and their own answers count.
    assert r["accuracy_at_budget"] == [1.0, 0.5]
