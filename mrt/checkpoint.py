"""Checkpoints: a folder per step that `transformers` loads as is, plus what resuming needs; atomic; keep the last N.

Layout of `<root>/step_00000120/`:
    config.json, model.safetensors   the model in Hugging Face layout (the model's own `save_pretrained`)
    tokenizer files                  (`tokenizer.save_pretrained`), so the folder is a complete HF model
    trainer_state.pt                 step, optimizer, scheduler, RNG states (python, numpy, torch, cuda), extra
    mrt_config.yaml                  the resolved run config
Everything is written into `<root>/.tmp-step_00000120-<pid>/` and then renamed to its final name (a rename within
one filesystem is atomic), so a process killed mid-write leaves the previous checkpoints intact and only a `.tmp-*`
folder behind, which the next save removes. `trainer_state.pt` is written last; a step folder without it is never
taken for resume. Only one process should write (rank 0, with the full state dict gathered by the caller).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step_(\d{8})$")
TRAINER_STATE = "trainer_state.pt"


def _step_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_model(model, path: str) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(path)
        return
    # Fallback for a plain module: its state dict under its own names, and its config if it has one.
    from safetensors.torch import save_file
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)


def save_checkpoint(root: str, step: int, model, *, tokenizer=None, optimizer=None, scheduler=None, config=None,
                    extra: dict | None = None, keep_last: int | None = None,
                    optimizer_state: dict | None = None) -> str:
    """Write the checkpoint of `step` under root atomically; prune to the last keep_last; returns its folder.

    optimizer_state: an optimizer state dict gathered by the caller (FSDP2), saved when `optimizer` is None."""
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):          # leftovers of a killed save
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    final = os.path.join(root, _step_name(step))
    tmp = os.path.join(root, f".tmp-{_step_name(step)}-{os.getpid()}")
    os.makedirs(tmp)
    _save_model(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if config is not None:
        with open(os.path.join(tmp, "mrt_config.yaml"), "w") as f:
            f.write(config.to_yaml() if hasattr(config, "to_yaml") else str(config))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else optimizer_state,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    torch.save(state, os.path.join(tmp, TRAINER_STATE))
    _fsync_dir(tmp)
    if os.path.exists(final):              # re-saving a step (e.g. the final step after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep_last is not None:
        prune(root, keep_last)
    return final


def _fsync_dir(path: str) -> None:
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """Complete checkpoints under root as (step, folder), oldest first."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        if m and os.path.isfile(os.path.join(root, name, TRAINER_STATE)):
            out.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(out)


def latest_checkpoint(root: str) -> str | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def prune(root: str, keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def load_model_weights(model, path: str) -> None:
    """Load model.safetensors of a checkpoint folder into model (strict).

    A model whose parameter names differ from the Hugging Face names it saves can provide
    `load_hf_state_dict(state_dict)`; otherwise `load_state_dict(strict=True)` is used.
    """
    from safetensors.torch import load_file
    sd = load_file(os.path.join(path, "model.safetensors"))
    if hasattr(model, "load_hf_state_dict"):
        model.load_hf_state_dict(sd)
        return
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Tied embeddings: HF files omit lm_head.weight, which the module still lists.
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(getattr(model, "config", None),
                                                                             "tie_word_embeddings", False))]
    if missing or unexpected:
        raise RuntimeError(f"{path}: checkpoint does not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")


def load_checkpoint(path: str, model=None, *, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Restore what is given from a checkpoint folder; returns the trainer state (step, extra, ...)."""
    state = torch.load(os.path.join(path, TRAINER_STATE), map_location="cpu", weights_only=False)
    if model is not None:
        load_model_weights(model, path)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state
