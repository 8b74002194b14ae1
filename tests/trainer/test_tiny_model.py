import json
import os
import random
import sys

import pytest
import torch

from mrt.tasks import arithmetic as task

from .conftest import ARITHMETIC_MODEL as TINY_MODEL, ROOT

needs_model = pytest.mark.skipif(not os.path.isfile(os.path.join(TINY_MODEL, "model.safetensors")),
                                 reason="mrt/assets/tiny_arithmetic_model not made yet "
                                        "(python scripts/make_tiny_model.py --task arithmetic)")


@needs_model
def test_loads_in_transformers_and_is_small():
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    size = sum(os.path.getsize(os.path.join(TINY_MODEL, f)) for f in os.listdir(TINY_MODEL))
    assert size < 10 * 2**20
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    assert isinstance(model, LlamaForCausalLM)
    n = sum(p.numel() for p in model.parameters())
    assert 1e5 <= n <= 2e6, n
    assert model.config.eos_token_id == tok.eos_token_id and len(tok) <= model.config.vocab_size
    p = task.generate_problems(1, seed=9, split="heldout")[0]
    prompt = tok.apply_chat_template([{"role": "user", "content": p.text}], add_generation_prompt=True, tokenize=False)
    assert prompt == f"Question : {p.text}\nAnswer :\n"
    tr = task.reference_trace(p, random.Random(0))
    ids = tok(prompt + tr, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == prompt + tr and tok.unk_token_id not in ids


@needs_model
def test_greedy_traces_have_the_task_format():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    problems = task.generate_problems(16, seed=5, split="heldout")
    tok.padding_side = "left"
    enc = tok([f"Question : {p.text}\nAnswer :\n" for p in problems], return_tensors="pt", padding=True,
              add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=100, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    boxed = [task.extract_answer(t) is not None for t in texts]
    print(texts[:3])
    assert sum(boxed) >= 12          # the format is learned
    with open(os.path.join(TINY_MODEL, "training_info.json")) as f:
        info = json.load(f)
    assert 0.15 <= info["heldout_greedy_accuracy"] <= 0.7     # moderate: room for RL


def test_script_smoke(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_tiny_model
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "m")
    make_tiny_model.main(["--task", "arithmetic", "--out", out, "--steps", "2", "--eval-every", "2", "--eval-problems", "4", "--batch", "4"])
    from transformers import AutoModelForCausalLM, AutoTokenizer
    AutoModelForCausalLM.from_pretrained(out)
    assert len(AutoTokenizer.from_pretrained(out)) == len(make_tiny_model.build_tokenizer())
