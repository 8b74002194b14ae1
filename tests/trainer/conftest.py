import os

import pytest

from .real_models import QWEN_TOKENIZER_DIR as QWEN_TOKENIZER, ROOT, SHARED_DATA, import_script  # noqa: F401

TINY_MODEL = os.path.join(ROOT, "mrt", "assets", "tiny_model")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The embedded model's tokenizer (built in memory by the script that makes the model: same vocabulary)."""
    return import_script("make_tiny_model").build_tokenizer()


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not os.path.isdir(QWEN_TOKENIZER):
        pytest.skip(f"{QWEN_TOKENIZER} not present")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
