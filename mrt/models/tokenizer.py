"""The tokenizer of a Hugging Face model folder, through transformers.AutoTokenizer (no network: local files only).

`LazyTokenizer` defers loading to the first use: generation from token ids needs no tokenizer, so a folder holding
only config.json and weights still serves it. Only encoding or decoding text (stop strings, an output's `.text`)
needs one, and then a folder without tokenizer files raises `MissingTokenizerError` saying so. (transformers itself
raises for such a Llama folder, and for a Qwen2 folder returns a tokenizer that knows a few special tokens only: both
are refused the same way here.)
"""
from __future__ import annotations

import os

from ..errors import UserError

# Files one of which a folder's tokenizer is built from (fast tokenizer, sentencepiece, BPE vocabularies, config).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "tiktoken.model")


class MissingTokenizerError(UserError, RuntimeError):
    """Text had to be encoded or decoded, and the model folder has no usable tokenizer."""


def load_tokenizer(path: str | os.PathLike, **kwargs):
    """AutoTokenizer.from_pretrained(path) from local files; kwargs pass through (e.g. trust_remote_code)."""
    from transformers import AutoTokenizer
    kwargs.setdefault("local_files_only", os.path.isdir(path))
    return AutoTokenizer.from_pretrained(path, **kwargs)


def has_tokenizer_files(path: str | os.PathLike) -> bool:
    """Whether the folder holds any file a tokenizer is built from (a non-folder path, a hub id, is assumed to)."""
    if not os.path.isdir(path):
        return True
    return any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)


class LazyTokenizer:
    """A folder's tokenizer, loaded on first use; attribute access and calls go to the loaded tokenizer."""

    def __init__(self, path: str | os.PathLike, **kwargs):
        self.path = os.fspath(path)
        self._kwargs = kwargs
        self._tokenizer = None

    @property
    def is_loaded(self) -> bool:
        return self._tokenizer is not None

    def load(self):
        """The tokenizer, loading it now if needed; MissingTokenizerError if the folder has none."""
        if self._tokenizer is None:
            if not has_tokenizer_files(self.path):
                raise MissingTokenizerError(
                    f"{self.path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}): generating from "
                    "token ids works without one, but encoding or decoding text (stop strings, an output's .text) "
                    "needs one; add the tokenizer's files to the folder or pass a tokenizer to the engine")
            try:
                self._tokenizer = load_tokenizer(self.path, **self._kwargs)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise MissingTokenizerError(f"the tokenizer in {self.path} cannot be loaded: {exc}") from exc
        return self._tokenizer

    def __getattr__(self, name: str):
        # Called only for names not found on this object: private ones are ours (and absent while unpickling).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.load())

    def __repr__(self) -> str:
        return f"LazyTokenizer({self.path!r}, loaded={self.is_loaded})"
