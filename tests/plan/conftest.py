import json

import pytest

# A small Qwen2 shape, hand-countable: d=64, 4 heads of 16, 2 KV heads, intermediate 128, 2 layers, vocab 100, untied.
SMALL = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
         "max_position_embeddings": 4096, "tie_word_embeddings": False, "hidden_act": "silu", "eos_token_id": 0,
         "torch_dtype": "bfloat16"}


@pytest.fixture
def small_model_dir(tmp_path):
    """A model folder holding only a config.json (no weights, no tokenizer)."""
    d = tmp_path / "small_model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(SMALL))
    return str(d)
