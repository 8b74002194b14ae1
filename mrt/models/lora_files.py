"""LoRA adapters on disk, in peft's format, and their merge into a plain Hugging Face folder.

An adapter folder (what a LoRA run's checkpoint holds instead of the full weights):
    adapter_config.json          peft's LoraConfig (r, lora_alpha, lora_dropout, target_modules,
                                 base_model_name_or_path), written by peft itself: the fields of the peft installed
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight (r, in), ....lora_B.weight (out, r)
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)` loads it (tests/trainer/test_lora.py
checks the logits against ours). Merged: `save_merged` writes config.json + model.safetensors with W0 + (alpha/r) B A
in every adapted linear, a folder transformers loads with no peft at all; `export_merged` (and
`python -m mrt.models.lora_files CHECKPOINT OUT_DIR`) makes one from any adapter folder or checkpoint.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from .hf_checkpoint import CheckpointError
from .lora import ALL_LINEAR, add_adapters, lora_linears, merged_copy

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."      # peft's PeftModel -> LoraModel -> the transformers model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{peft key: tensor} of the model's adapters."""
    out = {}
    for name, lin in lora_linears(model).items():
        out[f"{PREFIX}{name}.lora_A.weight"] = lin.lora_A.weight
        out[f"{PREFIX}{name}.lora_B.weight"] = lin.lora_B.weight
    return out


def _target_names(model: nn.Module, settings) -> list[str]:
    """target_modules as written in adapter_config.json: all-linear resolved to the adapted layers' names (so peft
    adapts the same layers of the transformers model), a list as given."""
    if list(settings.target_modules) == [ALL_LINEAR]:
        return sorted({n.rsplit(".", 1)[-1] for n in lora_linears(model)})
    return list(settings.target_modules)


def save_adapter(model: nn.Module, path: str, settings, base_model_path: str | None) -> None:
    """adapter_config.json (by peft's LoraConfig) + adapter_model.safetensors into path."""
    from peft import LoraConfig
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    alpha = int(settings.alpha) if float(settings.alpha).is_integer() else settings.alpha
    LoraConfig(r=settings.r, lora_alpha=alpha, lora_dropout=settings.dropout,
               target_modules=_target_names(model, settings), bias="none", task_type="CAUSAL_LM",
               base_model_name_or_path=base_model_path).save_pretrained(path)
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in adapter_state_dict(model).items()}
    save_file(tensors, os.path.join(path, ADAPTER_WEIGHTS), metadata={"format": "pt"})


def read_adapter_config(path: str) -> dict:
    name = os.path.join(path, ADAPTER_CONFIG)
    try:
        with open(name, encoding="utf-8") as f:
            cfg = json.load(f)
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{name}: cannot be read as a LoRA adapter config ({type(exc).__name__}: {exc})") \
            from None
    if cfg.get("peft_type", "LORA") != "LORA" or r < 1:
        raise CheckpointError(f"{name}: not a LoRA adapter (peft_type {cfg.get('peft_type')!r}, r {r})")
    return cfg


def load_adapter(model: nn.Module, path: str, settings=None) -> None:
    """Copy the adapter of folder path into the model's LoraLinears, in place. CheckpointError names a config that
    differs from settings (r, alpha) and missing, unexpected or wrong-shape tensors."""
    from safetensors.torch import load_file
    cfg = read_adapter_config(path)
    if settings is not None and (int(cfg["r"]) != settings.r or float(cfg["lora_alpha"]) != float(settings.alpha)):
        raise CheckpointError(f"{os.path.join(path, ADAPTER_CONFIG)}: an adapter of r={cfg['r']}, "
                              f"alpha={cfg['lora_alpha']}; this run has model.lora.r={settings.r}, "
                              f"model.lora.alpha={settings.alpha}")
    weights = os.path.join(path, ADAPTER_WEIGHTS)
    try:
        found = load_file(weights)
    except Exception as exc:      # a missing or garbled file: safetensors raises several kinds
        raise CheckpointError(f"{weights}: cannot be read ({type(exc).__name__}: {exc})") from None
    # peft names a single adapter without ".default"; some tools write it: accept both
    found = {k.replace(".default.weight", ".weight"): v for k, v in found.items()}
    own = adapter_state_dict(model)
    missing, unexpected = set(own) - set(found), set(found) - set(own)
    wrong = [f"{k}: {tuple(found[k].shape)} vs {tuple(t.shape)}" for k, t in own.items()
             if k in found and found[k].shape != t.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{weights} does not match the adapted model: missing {sorted(missing)[:4]}, "
                              f"unexpected {sorted(unexpected)[:4]}, wrong shapes {wrong[:4]}")
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(found[k])


def save_merged(model: nn.Module, path: str) -> None:
    """config.json + model.safetensors of the adapted model with its adapters merged (W0 + s B A), for transformers."""
    merged, _ = merged_copy(model)
    merged.save_pretrained(path)


def load_adapted(path: str, dtype: torch.dtype | str = "auto", device: torch.device | str = "cpu",
                 base_model_path: str | None = None) -> nn.Module:
    """The base model of an adapter folder (adapter_config.json's base_model_name_or_path, or base_model_path) with
    the folder's adapter on it."""
    from .causal_lm import CausalLM
    cfg = read_adapter_config(path)
    base = base_model_path or cfg.get("base_model_name_or_path")
    if not base:
        raise CheckpointError(f"{os.path.join(path, ADAPTER_CONFIG)}: names no base model; pass base_model_path")
    model = CausalLM.from_pretrained(base, dtype=dtype, device=device)
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    add_adapters(model, int(cfg["r"]), float(cfg["lora_alpha"]), targets)
    load_adapter(model, path)
    return model


def export_merged(path: str, out_dir: str, *, dtype: torch.dtype | str = "auto",
                  base_model_path: str | None = None) -> str:
    """A Hugging Face folder (config.json, model.safetensors, and the tokenizer when path has one) with the adapter
    of path (a LoRA checkpoint or adapter folder) merged into its base model; returns out_dir."""
    model = load_adapted(path, dtype=dtype, base_model_path=base_model_path)
    save_merged(model, out_dir)
    if os.path.exists(os.path.join(path, "tokenizer_config.json")):
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(path).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m mrt.models.lora_files",
                                 description="Merge a LoRA checkpoint's adapter into its base model (a folder "
                                             "transformers loads).")
    ap.add_argument("checkpoint", help="a LoRA checkpoint folder (adapter_config.json + adapter_model.safetensors)")
    ap.add_argument("out_dir")
    ap.add_argument("--base", default=None, help="the base model folder (default: adapter_config.json's)")
    args = ap.parse_args(argv)
    print(export_merged(args.checkpoint, args.out_dir, base_model_path=args.base))


if __name__ == "__main__":
    main()
