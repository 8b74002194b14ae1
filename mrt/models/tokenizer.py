"""The tokenizer of a Hugging Face model folder, through transformers.AutoTokenizer (no network: local files only)."""
from __future__ import annotations

import os


def load_tokenizer(path: str | os.PathLike, **kwargs):
    """AutoTokenizer.from_pretrained(path) from local files; kwargs pass through (e.g. trust_remote_code)."""
    from transformers import AutoTokenizer
    kwargs.setdefault("local_files_only", os.path.isdir(path))
    return AutoTokenizer.from_pretrained(path, **kwargs)
