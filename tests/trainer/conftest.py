import os

import pytest

from .real_models import QWEN_TOKENIZER_DIR as QWEN_TOKENIZER, ROOT, FIXTURES, import_script  # noqa: F401

TINY_MODEL = os.path.join(ROOT, "mrt", "assets", "tiny_model")                        # countdown: the default
ARITHMETIC_MODEL = os.path.join(ROOT, "mrt", "assets", "tiny_arithmetic_model")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The arithmetic model's tokenizer (built in memory by the script that makes the model: same vocabulary)."""
    return import_script("make_tiny_model").build_tokenizer()


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5-Math-1.5B tokenizer (vocab.json + merges.txt in tests/fixtures)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
