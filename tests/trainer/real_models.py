"""Real-shaped fixtures: a small random-weight Qwen2 with the real Qwen2.5-Math tokenizer, and real data rows.

The files live in the repository under tests/fixtures/ (their sources, licences and cuts: tests/fixtures/README.md),
so a plain clone runs every test that reads them.
"""
from __future__ import annotations

import json
import os


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
QWEN_TOKENIZER_DIR = os.path.join(FIXTURES, "tokenizers", "Qwen2.5-Math-1.5B")


def import_script(name: str):
    """The module of scripts/<name>.py (the scripts are not a package)."""
    import importlib
    import sys
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def fixture_file(*parts: str) -> str:
    """The path of tests/fixtures/<parts>; a missing file is an error of the checkout, not a reason to skip."""
    path = os.path.join(FIXTURES, *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: a test fixture is missing from the checkout (see tests/fixtures/README.md)")
    return path


def make_random_qwen2(out_dir: str, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> str:
    """A Qwen2 of the real tokenizer's vocabulary (151,936 rows) and chat template, random weights, saved by
    transformers with the tokenizer: a Hugging Face folder of about 20 MB."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok_dir = fixture_file("tokenizers", "Qwen2.5-Math-1.5B")
    with open(os.path.join(tok_dir, "config.json")) as f:
        real = json.load(f)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = Qwen2Config(vocab_size=real["vocab_size"], hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=10000.0,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def random_qwen2_folder(tmp_path_factory) -> str:
    """make_random_qwen2 once per test session (under pytest's base temp folder), shared by the tests that need it."""
    path = tmp_path_factory.getbasetemp() / "random_qwen2"
    if not (path / "model.safetensors").exists():
        tmp = tmp_path_factory.mktemp("random_qwen2_tmp")
        make_random_qwen2(str(tmp))
        os.replace(tmp, path)
    return str(path)
