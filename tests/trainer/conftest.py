import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QWEN_TOKENIZER = "/work/shared/data/tokenizers/Qwen2.5-Math-1.5B"
SHARED_DATA = "/work/shared/data"
TINY_MODEL = os.path.join(ROOT, "mrt", "assets", "tiny_model")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The embedded model's tokenizer (built in memory by the script that makes the model: same vocabulary)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_tiny_model
    finally:
        sys.path.pop(0)
    return make_tiny_model.build_tokenizer()


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not os.path.isdir(QWEN_TOKENIZER):
        pytest.skip(f"{QWEN_TOKENIZER} not present")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
