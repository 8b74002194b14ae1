"""The whole evaluation: every model on every dataset, then results.json, results.md and the plots."""
from __future__ import annotations

from pathlib import Path

from mrt.config import ConfigError, EvalConfig
from mrt.errors import ModelFolderError
from mrt.hub import check_model_folder, load_checked_tokenizer, load_model, resolve_model_path

from .evaluate import evaluate_dataset
from .plots import plot_results
from .problems import load_dataset
from .report import write_report


def model_context(path: str) -> int:
    """max_position_embeddings of a Hugging Face folder, read before loading any weights."""
    hf = check_model_folder(path, key="--model")
    hf = hf.get("text_config", hf)
    if "max_position_embeddings" not in hf:
        raise ModelFolderError(f"--model: {Path(path) / 'config.json'} has no max_position_embeddings")
    return int(hf["max_position_embeddings"])


def check_budget(cfg: EvalConfig, name: str, max_context: int) -> None:
    if cfg.max_budget >= max_context:
        raise ConfigError(f"budget {cfg.max_budget} is larger than model {name}'s context of {max_context} tokens "
                          f"(max_position_embeddings); lower --budgets")


def load_engine(path: str, cfg: EvalConfig):
    """(engine, tokenizer, max_context) for a checkpoint or Hugging Face folder."""
    import torch

    from mrt.rollout import Engine

    dtype = getattr(torch, cfg.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype must name a torch dtype (float32, bfloat16, ...), got {cfg.dtype!r}")
    model = load_model(path, dtype=dtype, device=cfg.device, key="--model")
    tokenizer = load_checked_tokenizer(path, model.config.vocab_size, key="--model")
    engine = Engine(model, tokenizer, block_size=cfg.block_size, max_num_seqs=cfg.max_num_seqs,
                    max_num_batched_tokens=cfg.max_num_batched_tokens)
    return engine, tokenizer, int(model.config.max_position_embeddings)


def run(cfg: EvalConfig, *, engines: dict | None = None) -> list[dict]:
    """Evaluate and write the outputs under cfg.out. `engines` maps a model name to a ready
    (engine, tokenizer, max_context) to skip loading it from its folder."""
    # Datasets first: a bad column or an empty file fails before any model is loaded.
    datasets = [load_dataset(d, prompt_column=cfg.prompt_column, answer_column=cfg.answer_column, limit=cfg.limit)
                for d in cfg.data]
    engines = engines or {}
    # A hub id is fetched (or found in the cache) first; then every model's context before loading any of them.
    models = [(name, path if name in engines else resolve_model_path(path, key="--model"))
              for name, path in cfg.named_models()]
    for name, path in models:
        if name not in engines:
            check_budget(cfg, name, model_context(path))
    results = []
    for name, path in models:
        engine, tokenizer, max_context = engines.get(name) or load_engine(path, cfg)
        check_budget(cfg, name, max_context)
        for ds in datasets:
            results.append(evaluate_dataset(engine, tokenizer, ds, cfg, max_context=max_context, model_name=name))
        del engine
    write_report(results, cfg.out, cfg.to_dict())
    plot_results(results, cfg.out)
    return results


__all__ = ["check_budget", "load_engine", "model_context", "run"]
