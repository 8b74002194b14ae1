"""Model folders from a local path or a Hugging Face Hub id, and their checked loading.

`model.path` (and `model.tokenizer_path`, and `python -m mrt.eval --model`) is a local folder, `mrt:REL` (inside the
package), or a hub id (`org/name`, as in transformers and TRL), fetched with `huggingface_hub.snapshot_download` at
`model.revision` (a branch, tag or commit; None: the default branch) into the usual Hugging Face cache, only the files
a model folder needs (config, safetensors weights, tokenizer files). Offline (`HF_HUB_OFFLINE=1`) a cached snapshot
is used; without one, or when the hub cannot be reached, the run ends with one line saying so (HubError).

Every problem of the folder itself (missing, no config.json, unreadable or unsupported config, weights that do not
match, a tokenizer that does not load or cannot encode text for this model) is a ModelFolderError naming the key
and the folder, raised before any training starts.
"""
from __future__ import annotations

import json
import os
import re

from .config import resolve_path
from .errors import HubError, ModelFolderError

# What a model folder needs; snapshot_download skips the rest (.bin / .pth / .gguf copies of the weights, images).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def is_hub_id(path: str) -> bool:
    """Whether path can only mean a hub repository: no such local path, and `name` or `org/name` in hub spelling."""
    return not os.path.exists(path) and not path.startswith(("mrt:", "~")) and bool(_HUB_ID.match(path))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_path(path: str, *, revision: str | None = None, key: str = "model.path") -> str:
    """A local folder for path: itself, the `mrt:` asset, or the hub snapshot (downloaded unless cached)."""
    local = resolve_path(path)
    if os.path.isdir(local):
        return local
    if os.path.exists(local):
        raise ModelFolderError(f"{key}: {path} is a file; it must be a model folder (config.json, *.safetensors, "
                               "tokenizer files) or a Hugging Face Hub id")
    if not is_hub_id(path):
        raise ModelFolderError(f"{key}: {path}: no such folder")
    return download_snapshot(path, revision=revision, key=key)


def download_snapshot(repo_id: str, *, revision: str | None = None, key: str = "model.path") -> str:
    """snapshot_download of a model repository's folder files; HubError with one line when it cannot be had."""
    from huggingface_hub import snapshot_download
    at = f" at revision {revision}" if revision else ""
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES, local_files_only=offline())
    except Exception as exc:  # noqa: BLE001 (any failure to fetch: its type and message go into the one line)
        raise HubError(f"{key}: {repo_id}{at}: {_why_not_fetched(exc)}") from None


def _why_not_fetched(exc: BaseException) -> str:
    name = type(exc).__name__
    if offline():
        return ("not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; "
                "fetch it where there is network (`hf download ID`) or give a local folder")
    if name == "RepositoryNotFoundError":
        return "no such repository on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
    if name == "RevisionNotFoundError":
        return "no such revision in the repository (set model.revision to a branch, tag or commit)"
    if name == "GatedRepoError":
        return "a gated repository: accept its terms on the Hub and log in with `hf auth login`"
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or _is_connection_error(exc):
        return ("the Hugging Face Hub cannot be reached (no network?) and the model is not in the local cache; "
                "fetch it where there is network or give a local folder")
    return f"could not be fetched from the Hugging Face Hub ({name}: {short_message(exc)})"


def short_message(exc: BaseException, limit: int = 300) -> str:
    """exc's message on one line, cut to limit characters (library messages can run to pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_connection_error(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, (ConnectionError, TimeoutError)) or "Connect" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_model_folder(path: str, key: str = "model.path") -> dict:
    """The folder's parsed config.json (ModelFolderError when it is missing or unreadable)."""
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ModelFolderError(f"{key}: {path} has no config.json (is it a Hugging Face model folder?)")
    try:
        with open(cfg_file, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{key}: {cfg_file} cannot be read ({exc})") from None
    if not isinstance(cfg, dict):
        raise ModelFolderError(f"{key}: {cfg_file} must hold a JSON object")
    return cfg


def load_model(path, *, dtype="float32", device="cpu", key: str = "model.path"):
    """The model of a local folder: CausalLM.from_pretrained(path) with the folder's problems as one-line
    ModelFolderErrors naming key. The one loader: training, generation, evaluation and the checks load through it."""
    from .models import CausalLM, CheckpointError
    check_model_folder(path, key)
    try:
        return CausalLM.from_pretrained(path, dtype=dtype, device=device)
    except CheckpointError as exc:
        raise ModelFolderError(f"{key}: {exc}") from None
    except (KeyError, TypeError, ValueError, OSError) as exc:   # config.json lacks a field / has a bad value
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelFolderError(f"{key}: {path}/config.json: {what}") from None


def load_checked_tokenizer(path: str, vocab_size: int, *, key: str = "model.tokenizer_path"):
    """AutoTokenizer of path, checked to encode text into ids the model can embed.

    transformers can return a tokenizer that loads but knows nothing (a folder without tokenizer.json or vocab
    files gives a few special tokens only): such a tokenizer is refused here rather than training on unknown tokens.
    """
    from .models import load_tokenizer
    try:
        tok = load_tokenizer(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelFolderError(f"{key}: the tokenizer in {path} cannot be loaded ({short_message(exc)})"
                               ) from None
    probe = "Let me compute 12 + 30 = 42. Wait, check it."
    ids = tok(probe, add_special_tokens=False)["input_ids"]
    unk = getattr(tok, "unk_token_id", None)
    known = [i for i in ids if i != unk]
    if len(tok) < 32 or not known:
        raise ModelFolderError(f"{key}: the tokenizer in {path} has {len(tok)} tokens and cannot encode text (its "
                               "vocabulary files, e.g. tokenizer.json, are missing?)")
    if max(ids) >= vocab_size:
        raise ModelFolderError(f"{key}: the tokenizer in {path} gives id {max(ids)}, outside the model's vocabulary "
                               f"of {vocab_size}: tokenizer and model do not match")
    return tok
