"""Reading and writing the weights of a Hugging Face model folder (safetensors only).

Read: `model.safetensors`, or the shards listed in `model.safetensors.index.json`. Every tensor the model expects must
be there with its exact shape, and nothing else may be (a tied model's `lm_head.weight` and old rope `inv_freq`
buffers are tolerated and dropped); otherwise CheckpointError names the offending tensors.
Write: the same layout, one file or shards of at most `max_shard_size` bytes plus the index; a tied lm-head is left out
(safetensors cannot store shared tensors, and transformers re-ties it from the config).
"""
from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(UserError):
    """The checkpoint does not match the model: missing, unexpected or wrong-shape tensors (all named)."""


def _ignorable(name: str, tied: bool) -> bool:
    return name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight")


def checkpoint_files(path: str | os.PathLike) -> dict[str, list[str]]:
    """{file path: [tensor names]} of the folder's safetensors checkpoint."""
    index_path = os.path.join(path, INDEX_FILE)
    single_path = os.path.join(path, SINGLE_FILE)
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            files.setdefault(os.path.join(path, fname), []).append(name)
        for fpath in files:
            if not os.path.exists(fpath):
                raise CheckpointError(f"shard {os.path.basename(fpath)} listed in {INDEX_FILE} is missing from {path}")
        return files
    if os.path.exists(single_path):
        with safe_open(single_path, framework="pt") as f:
            return {single_path: list(f.keys())}
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path}")


def _format_names(names) -> str:
    names = sorted(names)
    more = f" (and {len(names) - 10} more)" if len(names) > 10 else ""
    return ", ".join(names[:10]) + more


def load_state_dict(path: str | os.PathLike, expected: dict[str, torch.Size], *, dtype: torch.dtype,
                    device: torch.device | str, tied: bool) -> dict[str, torch.Tensor]:
    """Tensors of the checkpoint at `path` as {name: tensor in dtype on device}, checked against `expected` shapes."""
    files = checkpoint_files(path)
    found: dict[str, tuple[str, list[int]]] = {}
    for fpath, names in files.items():
        with safe_open(fpath, framework="pt") as f:
            for name in names:
                if name not in f.keys():
                    raise CheckpointError(f"tensor {name} is listed for {os.path.basename(fpath)} but not in it")
                found[name] = (fpath, f.get_slice(name).get_shape())
    missing = set(expected) - set(found)
    unexpected = {n for n in found if n not in expected and not _ignorable(n, tied)}
    wrong = [f"{n}: checkpoint {tuple(found[n][1])} vs model {tuple(expected[n])}" for n in expected
             if n in found and tuple(found[n][1]) != tuple(expected[n])]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_format_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_format_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(sorted(wrong)[:10])}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the model: " + " | ".join(problems))
    device = torch.device(device)
    state: dict[str, torch.Tensor] = {}
    for fpath, names in files.items():
        wanted = [n for n in names if n in expected]
        if not wanted:
            continue
        # Read on the target device when it is a GPU (no CPU copy of the whole model), then cast.
        with safe_open(fpath, framework="pt", device=str(device) if device.type == "cuda" else "cpu") as f:
            for name in wanted:
                state[name] = f.get_tensor(name).to(device=device, dtype=dtype)
    return state


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike, *,
                    max_shard_size: int | None = None) -> list[str]:
    """Write `state` as model.safetensors, or as shards of <= max_shard_size bytes + index. Returns the files written."""
    os.makedirs(path, exist_ok=True)
    tensors = {n: t.detach().to("cpu").contiguous() for n, t in state.items()}
    for stale in (SINGLE_FILE, INDEX_FILE):
        if os.path.exists(os.path.join(path, stale)):
            os.remove(os.path.join(path, stale))
    if max_shard_size is None:
        save_file(tensors, os.path.join(path, SINGLE_FILE), metadata={"format": "pt"})
        return [SINGLE_FILE]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map, written = {}, []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
        written.append(fname)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(path, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return written + [INDEX_FILE]
