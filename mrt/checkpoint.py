"""Checkpoints: a folder per step that `transformers` loads as is, plus what resuming needs; atomic; verified; no
pickle; keep the last N.

Layout of `<root>/step_00000120/`:
    config.json, model.safetensors   the model in Hugging Face layout (the model's own `save_pretrained`)
    tokenizer files                  (`tokenizer.save_pretrained`), so the folder is a complete HF model
    optimizer.safetensors            the optimizer state's tensors (moments, step counts), by their place in the dict
    trainer_state.json               step, the optimizer state's structure (hyper-parameters, which tensor goes
                                     where), scheduler, RNG states (python, numpy, torch, cuda), extra
    mrt_config.yaml                  the resolved run config
    manifest.json                    every other file's size and SHA-256; written last
Nothing in a checkpoint is a pickle: safetensors and JSON are read without running code, so a checkpoint from
anyone can be resumed safely. A folder of the old layout (`trainer_state.pt`, a pickle whose loading can run any
code) is refused (LegacyCheckpoint) unless the user trusts it and asks for it to be converted (`convert_legacy`).

Everything is written into `<root>/.tmp-step_00000120-<pid>/` and then renamed to its final name (a rename within
one filesystem is atomic), so a process killed mid-write leaves the previous checkpoints intact and only a `.tmp-*`
folder behind, which the next save removes. The manifest is written last: a step folder without one is never taken
for resume, and resume checks every file against it (`verify`), so a truncated or missing file or a garbled manifest
is named, and the newest good checkpoint is taken instead (`find_resumable`). A write that fails (a full disk) removes
its partial folder and raises CheckpointWriteError; the previous checkpoints are untouched (pruning runs only after a
complete write). Only one process should write (rank 0, with the full state dict gathered by the caller).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from typing import Callable

import numpy as np
import torch

from .errors import UserError

_STEP_DIR = re.compile(r"^step_(\d{8})$")
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.safetensors"
LEGACY_STATE = "trainer_state.pt"
FORMAT = "mrt-checkpoint"
VERSION = 2


class BrokenCheckpoint(UserError):
    """A checkpoint folder that fails its manifest check, or that cannot be used; the message names the file."""


class LegacyCheckpoint(BrokenCheckpoint):
    """A checkpoint of the old layout (a pickled trainer_state.pt), refused unless converted on purpose."""


class CheckpointWriteError(UserError, OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous checkpoints are as they were."""


def _step_name(step: int) -> str:
    return f"step_{step:08d}"


# ---- RNG states -----------------------------------------------------------------------------------------------------

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


# ---- state dicts as JSON + tensors ----------------------------------------------------------------------------------
# A nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) becomes JSON with tagged nodes:
# {"__tensor__": key} for a tensor stored in a safetensors file under key (or inline, {"__tensor__": null, "dtype",
# "shape", "data"}, for small ones such as RNG states), {"__tuple__": [...]}, {"__ndarray__": [...], "dtype"},
# {"__dict__": [[key, value], ...]} for a dict whose keys are not all strings (the optimizer's parameter indices).
# Decoding only builds these plain values: nothing is imported or called by name.

_TAGS = ("__tensor__", "__tuple__", "__ndarray__", "__dict__")


def encode_state(obj, tensors: dict | None, prefix: str = "s"):
    """obj -> a JSON-able value; tensors go into `tensors` (name -> tensor) when it is given, else inline."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if tensors is None:
            return {"__tensor__": None, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                    "data": t.flatten().tolist()}
        tensors[prefix] = t.clone()       # a copy: safetensors refuses tensors that share memory
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: encode_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__dict__": [[encode_state(k, None), encode_state(v, tensors, f"{prefix}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__} in a trainer state (at {prefix})")


def decode_state(obj, tensors: dict | None, where: str):
    """The inverse of encode_state; a malformed node raises BrokenCheckpoint naming `where` (the file)."""
    if isinstance(obj, list):
        return [decode_state(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    try:
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key is None:
                dtype = getattr(torch, obj["dtype"])
                if not isinstance(dtype, torch.dtype):
                    raise ValueError(f"unknown dtype {obj['dtype']!r}")
                return torch.tensor(obj["data"], dtype=dtype).reshape(obj["shape"])
            if tensors is None or key not in tensors:
                raise ValueError(f"tensor {key!r} is missing")
            return tensors[key]
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors, where) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
        if "__dict__" in obj:
            return {_hashable(decode_state(k, None, where)): decode_state(v, tensors, where)
                    for k, v in obj["__dict__"]}
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError) as exc:
        raise BrokenCheckpoint(f"{where}: malformed entry ({exc})") from None
    return {k: decode_state(v, tensors, where) for k, v in obj.items()}


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


# ---- manifest -------------------------------------------------------------------------------------------------------

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for d, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(d, n), folder) for n in names]
    return sorted(out)


def write_manifest(folder: str, step: int) -> None:
    files = {rel: {"bytes": os.path.getsize(os.path.join(folder, rel)), "sha256": _sha256(os.path.join(folder, rel))}
             for rel in _files(folder) if rel != MANIFEST}
    _write_json(os.path.join(folder, MANIFEST), {"format": FORMAT, "version": VERSION, "step": step, "files": files})


def verify(path: str) -> dict:
    """Check every file of the checkpoint folder against its manifest -> the manifest. BrokenCheckpoint names the
    first file that is missing, of another size or another checksum, or a manifest that cannot be read."""
    name = os.path.join(path, MANIFEST)
    if not os.path.isfile(name):
        if os.path.isfile(os.path.join(path, LEGACY_STATE)):
            raise legacy_error(path)
        raise BrokenCheckpoint(f"{name}: missing (an incomplete checkpoint)")
    try:
        with open(name, encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("not an mrt checkpoint manifest")
        entries = [(rel, int(e["bytes"]), str(e["sha256"])) for rel, e in files.items()]
        int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BrokenCheckpoint(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from None
    if manifest.get("version") != VERSION:
        raise BrokenCheckpoint(f"{name}: checkpoint format version {manifest.get('version')!r}, this mrt reads "
                               f"version {VERSION}")
    for rel, size, digest in entries:
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise BrokenCheckpoint(f"{name}: names a file outside the checkpoint ({rel!r})")
        f = os.path.join(path, rel)
        if not os.path.isfile(f):
            raise BrokenCheckpoint(f"{f}: missing (listed in the manifest)")
        got = os.path.getsize(f)
        if got != size:
            raise BrokenCheckpoint(f"{f}: {got} bytes, the manifest says {size} (truncated or changed)")
        if _sha256(f) != digest:
            raise BrokenCheckpoint(f"{f}: checksum differs from the manifest (corrupted or changed)")
    for need in (TRAINER_STATE, OPTIMIZER, "model.safetensors"):
        # the weights: model.safetensors, its shards, or a LoRA run's adapter (mrt.models.lora_files)
        if need not in files and not (need == "model.safetensors" and any(
                r.endswith(".safetensors") and r.startswith(("model", "adapter_model")) for r in files)):
            raise BrokenCheckpoint(f"{os.path.join(path, need)}: missing (not in the manifest)")
    return manifest


def legacy_error(path: str) -> LegacyCheckpoint:
    return LegacyCheckpoint(
        f"{os.path.join(path, LEGACY_STATE)}: a checkpoint of the old layout, whose trainer state is a pickle that "
        "can run any code when loaded; it is not loaded. If you made it yourself or trust its source, convert it "
        "once with --checkpoint.convert_legacy (then resume as usual)")


# ---- save -----------------------------------------------------------------------------------------------------------

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


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def write_trainer_state(folder: str, state: dict) -> None:
    """state (step, optimizer, scheduler, rng, extra) -> optimizer.safetensors + trainer_state.json in folder."""
    from safetensors.torch import save_file
    tensors: dict[str, torch.Tensor] = {}
    doc = {"step": int(state["step"]),
           "optimizer": encode_state(state.get("optimizer"), tensors, "optimizer"),
           "scheduler": encode_state(state.get("scheduler"), None),
           "rng": encode_state(state.get("rng"), None),
           "extra": encode_state(state.get("extra") or {}, None)}
    save_file(tensors, os.path.join(folder, OPTIMIZER), metadata={"format": "pt"})
    _write_json(os.path.join(folder, TRAINER_STATE), doc)


def save_checkpoint(root: str, step: int, model, *, tokenizer=None, optimizer=None, scheduler=None, config=None,
                    extra: dict | None = None, keep_last: int | None = None,
                    optimizer_state: dict | None = None) -> str:
    """Write the checkpoint of `step` under root atomically; prune to the last keep_last; returns its folder.

    optimizer_state: an optimizer state dict gathered by the caller (FSDP2), saved when `optimizer` is None.
    A failed write (OSError: a full disk, a lost mount) removes the partial folder and raises CheckpointWriteError."""
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):          # leftovers of a killed save
        if name.startswith(".tmp-") or name.startswith(".old-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    final = os.path.join(root, _step_name(step))
    tmp = os.path.join(root, f".tmp-{_step_name(step)}-{os.getpid()}")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else optimizer_state,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    try:
        os.makedirs(tmp)
        _save_model(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if config is not None:
            with open(os.path.join(tmp, "mrt_config.yaml"), "w") as f:
                f.write(config.to_yaml() if hasattr(config, "to_yaml") else str(config))
        write_trainer_state(tmp, state)
        write_manifest(tmp, step)             # last: the folder is complete once this is on disk
        _fsync_dir(tmp)
        old = None
        if os.path.exists(final):              # re-saving a step (e.g. the final step after a periodic save)
            old = os.path.join(root, f".old-{_step_name(step)}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(root)
        kept = f"the previous checkpoint {prev} is as it was" if prev else "no earlier checkpoint exists"
        err = CheckpointWriteError(f"checkpoint: writing step {step} to {root} failed ({exc.strerror or exc}); "
                                   f"{kept}")
        err.errno = exc.errno
        raise err from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if keep_last is not None:
        prune(root, keep_last)
    return final


def _fsync_dir(path: str) -> None:
    for rel in _files(path):
        with open(os.path.join(path, rel), "rb") as f:
            os.fsync(f.fileno())
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass


# ---- find -----------------------------------------------------------------------------------------------------------

def list_checkpoints(root: str, *, legacy: bool = False) -> list[tuple[int, str]]:
    """Checkpoints under root as (step, folder), oldest first: those with a manifest (complete writes; `verify`
    checks them), and with legacy=True also those of the old layout (trainer_state.pt, no manifest)."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        if not m:
            continue
        folder = os.path.join(root, name)
        if os.path.isfile(os.path.join(folder, MANIFEST)) or \
                (legacy and os.path.isfile(os.path.join(folder, LEGACY_STATE))):
            out.append((int(m.group(1)), folder))
    return sorted(out)


def latest_checkpoint(root: str) -> str | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def find_resumable(root: str, log: Callable[[str], None] = print) -> str | None:
    """The newest checkpoint under root that passes `verify`, or None when root holds none at all.

    A broken one is named and skipped in one line each (through log); with checkpoints present but none usable,
    BrokenCheckpoint. The newest of the old layout (a pickle) raises LegacyCheckpoint: it is never loaded here."""
    ckpts = list_checkpoints(root, legacy=True)
    if not ckpts:
        return None
    broken = []
    for _, path in reversed(ckpts):
        try:
            verify(path)
            if broken:
                log(f"checkpoint: resuming from {path} instead")
            return path
        except LegacyCheckpoint:
            raise
        except BrokenCheckpoint as exc:
            broken.append(str(exc))
            log(f"checkpoint: {exc}; skipping {os.path.basename(path)}")
    raise BrokenCheckpoint(f"checkpoint.dir: none of the {len(ckpts)} checkpoints in {root} can be resumed "
                           f"(newest: {broken[0]}); move the folder away to start afresh")


def prune(root: str, keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


# ---- load -----------------------------------------------------------------------------------------------------------

def load_model_weights(model, path: str) -> None:
    """Load model.safetensors of a checkpoint folder into model (strict).

    A model whose parameter names differ from the Hugging Face names it saves can provide
    `load_hf_state_dict(state_dict)`; otherwise `load_state_dict(strict=True)` is used.
    """
    from safetensors.torch import load_file
    if hasattr(model, "load_checkpoint_folder"):      # a LoRA run's adapter (mrt.models.lora.LoraModel)
        model.load_checkpoint_folder(path)
        return
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


def read_trainer_state(path: str) -> dict:
    """trainer_state.json + optimizer.safetensors of a checkpoint folder -> the trainer state (nothing executed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    name = os.path.join(path, TRAINER_STATE)
    try:
        with open(name, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or "step" not in doc:
            raise ValueError("no step")
    except (OSError, ValueError) as exc:
        raise BrokenCheckpoint(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from None
    opt = os.path.join(path, OPTIMIZER)
    try:
        tensors = load_file(opt)
    except (OSError, SafetensorError) as exc:
        raise BrokenCheckpoint(f"{opt}: cannot be read ({type(exc).__name__}: {exc})") from None
    state = {k: decode_state(doc.get(k), None, name) for k in ("step", "scheduler", "rng", "extra")}
    state["optimizer"] = decode_state(doc.get("optimizer"), tensors, opt)
    state["step"] = int(state["step"])
    return state


def load_checkpoint(path: str, model=None, *, optimizer=None, scheduler=None, restore_rng: bool = True,
                    check: bool = True) -> dict:
    """Restore what is given from a checkpoint folder; returns the trainer state (step, extra, ...).

    check: verify the folder against its manifest first (BrokenCheckpoint names the broken file)."""
    if check:
        verify(path)
    elif not os.path.isfile(os.path.join(path, TRAINER_STATE)) and os.path.isfile(os.path.join(path, LEGACY_STATE)):
        raise legacy_error(path)
    state = read_trainer_state(path)
    if model is not None:
        load_model_weights(model, path)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state


def convert_legacy(path: str) -> None:
    """Rewrite an old-layout checkpoint folder (trainer_state.pt, a pickle) in the current layout, in place.

    This unpickles trainer_state.pt, which runs whatever code the file holds: call it only on a checkpoint the user
    made or trusts, on the user's explicit request (`checkpoint.convert_legacy`)."""
    legacy = os.path.join(path, LEGACY_STATE)
    state = torch.load(legacy, map_location="cpu", weights_only=False)   # trusted by the user's explicit choice
    write_trainer_state(path, state)
    os.remove(legacy)
    write_manifest(path, int(state["step"]))
    _fsync_dir(path)


def convert_legacy_checkpoints(root: str, log: Callable[[str], None] = print) -> int:
    """Convert every old-layout checkpoint under root (convert_legacy: only on the user's explicit request)."""
    n = 0
    for _, path in list_checkpoints(root, legacy=True):
        if not os.path.isfile(os.path.join(path, MANIFEST)):
            convert_legacy(path)
            log(f"checkpoint: converted {path} from the old layout (trainer_state.pt) to safetensors + JSON")
            n += 1
    return n
