"""Hub ids in model.path and data.path: fetched through huggingface_hub / datasets (monkeypatched here: no network),
one clear line when offline or unreachable."""
from __future__ import annotations

import os
import shutil
import sys
import types

import pytest

from mrt.data import DataError, load_prompts
from mrt.errors import HubError
from mrt.hub import MODEL_FILES, is_hub_id, resolve_model_path
from mrt.trainer import Trainer

from .real_models import ROOT
from .trainer_helpers import tiny_config

TINY = os.path.join(ROOT, "mrt", "assets", "tiny_model")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """snapshot_download that 'downloads' the tiny model into a cache folder and records its arguments."""
    import huggingface_hub
    calls = []

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, local_files_only=False, **kw):
        calls.append(dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns,
                          local_files_only=local_files_only))
        if repo_id != "org/tiny":
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: .../{repo_id}")
        out = tmp_path / "hub-cache" / repo_id.replace("/", "--") / (revision or "main")
        if not out.exists():
            shutil.copytree(TINY, out)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


class RepositoryNotFoundError(OSError):
    """Stands for huggingface_hub's own (whose constructor wants an HTTP response): mrt.hub tells the hub's errors
    apart by class name, which holds across huggingface_hub versions."""


def test_hub_id_spelling(tmp_path):
    assert is_hub_id("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") and is_hub_id("gpt2")
    assert not is_hub_id(str(tmp_path)) and not is_hub_id("./x/y") and not is_hub_id("a/b/c")
    assert not is_hub_id("mrt:assets/tiny_model")


def test_trainer_takes_a_hub_id_at_a_revision(tmp_path, fake_hub):
    tr = Trainer(tiny_config(tmp_path, "--model.path", "org/tiny", "--model.revision", "v1"))
    assert fake_hub == [dict(repo_id="org/tiny", revision="v1", allow_patterns=MODEL_FILES, local_files_only=False)]
    assert tr.model.config.vocab_size > 0 and len(tr.tokenizer) > 0
    rec = tr.train_step()
    assert rec["step"] == 1


def test_unknown_repository_is_one_line(fake_hub):
    with pytest.raises(HubError, match="model.path: org/nosuch: no such repository"):
        resolve_model_path("org/nosuch")


def test_offline_uses_the_cache_only(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve_model_path("org/tiny")
    assert fake_hub[-1]["local_files_only"] is True


def test_offline_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        resolve_model_path("org/not-cached", revision="abc")


def test_eval_takes_a_hub_id(tmp_path, fake_hub):
    from mrt.eval.__main__ import main
    rc = main(["--model", "org/tiny", "--data", "arithmetic:2", "--budgets", "16", "--samples", "1",
               "--out", str(tmp_path / "ev"), "--no-progress"])
    assert rc == 0 and fake_hub[0]["repo_id"] == "org/tiny"
    assert (tmp_path / "ev" / "results.json").exists()


# ---- data.path naming a hub dataset (the optional `datasets` package) -------------------------------------------

def _fake_datasets(rows=None, error=None):
    calls = []

    def load_dataset(name, split=None, revision=None):
        calls.append((name, split, revision))
        if error is not None:
            raise error
        return rows

    return types.SimpleNamespace(load_dataset=load_dataset), calls


def test_hub_dataset_through_datasets(tiny_tokenizer, monkeypatch):
    from mrt.config import DataConfig
    mod, calls = _fake_datasets([{"problem": "1 + 2", "answer": "3"}, {"problem": "2 + 2", "answer": "4"}])
    monkeypatch.setitem(sys.modules, "datasets", mod)
    cfg = DataConfig(path="org/math", format="auto", chat_template=False, split="test", revision="r2")
    ds = load_prompts(cfg, tiny_tokenizer)
    assert calls == [("org/math", "test", "r2")] and [e.answer for e in ds.examples] == ["3", "4"]


def test_hub_dataset_unreachable_or_missing_package(tiny_tokenizer, monkeypatch):
    from mrt.config import DataConfig
    cfg = DataConfig(path="org/math", format="hub", chat_template=False)
    mod, _ = _fake_datasets(error=ConnectionError("no route to host"))
    monkeypatch.setitem(sys.modules, "datasets", mod)
    with pytest.raises(DataError, match="org/math: cannot be loaded from the Hugging Face Hub .*no route to host"):
        load_prompts(cfg, tiny_tokenizer)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="org/math: offline"):
        load_prompts(cfg, tiny_tokenizer)
    monkeypatch.setitem(sys.modules, "datasets", None)     # not installed
    with pytest.raises(DataError, match="needs the optional package datasets"):
        load_prompts(cfg, tiny_tokenizer)
