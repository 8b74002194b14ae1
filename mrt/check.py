"""`train.py --check`: read and validate everything a run needs, without generating or training, and say what it
would run.

What the run's start reads, in its order (mrt.trainer.Trainer): the config (already parsed by the caller), the model
folder (config.json and every tensor's name and shape read from the safetensors files, each tensor's bytes read once
to prove the file whole, nothing kept: the model is built on the meta device), the tokenizer (it must encode text
into ids the model embeds), the training and held-out data (every row through the same checks and tokenisation as
the run), the reward and the episode segmenter; then what only shows when the engine runs: the longest prompt must
leave room for an output token in the model's context, and an explicit rollout.num_blocks must hold one sequence.
With checkpoint.resume, the checkpoint to resume is found and checked against its manifest.
A problem raises the same user errors as the run (one `error:` line and exit code 2 through mrt.cli.run_cli).
"""
from __future__ import annotations

from .config import Config, ConfigError
from .errors import ModelFolderError


def load_model_meta(path: str, dtype, key: str):
    """The model on the meta device, its weights files read and checked (hub.load_model's errors, plus a file that
    ends early)."""
    from safetensors import SafetensorError

    from .hub import load_model
    try:
        return load_model(path, dtype=dtype, device="meta", key=key)
    except SafetensorError as exc:
        raise ModelFolderError(f"{key}: the weights in {path} cannot be read ({exc})") from None


def check_run(cfg: Config) -> str:
    """Validate cfg's model, tokenizer, data and settings (user errors as the run raises them) -> a summary."""
    from . import checkpoint as ckpt
    from .episodes import make_segmenter
    from .hub import load_checked_tokenizer, resolve_model_path
    from .data import load_run_data
    from .rewards import get_reward

    path = resolve_model_path(cfg.model.path, revision=cfg.model.revision)
    model = load_model_meta(path, cfg.model.dtype, "model.path")
    tok_key = "model.tokenizer_path" if cfg.model.tokenizer_path else "model.path"
    tok_path = resolve_model_path(cfg.model.tokenizer_path, revision=cfg.model.revision, key=tok_key) \
        if cfg.model.tokenizer_path else path
    tokenizer = load_checked_tokenizer(tok_path, model.config.vocab_size, key=tok_key)
    data = load_run_data(cfg, tokenizer)      # the run's own data loading (train, held-out split or eval file)
    get_reward(cfg.reward)          # a user's reward (module:function, file.py:function) is imported and checked
    from .reward_fn import Shaping
    Shaping(cfg.shaping)
    from .wandb_sink import check_available
    check_available(cfg.logging.wandb)      # logging.wandb asked for: the package must be installed
    from .models.lora import check_available as lora_asked, find_targets
    if lora_asked(cfg.model.lora):          # model.lora asked for: peft installed, target_modules in the model
        find_targets(model, cfg.model.lora.target_modules)
    make_segmenter(cfg.episodes)
    if not tokenizer(cfg.meta_prover.termination_text, add_special_tokens=False)["input_ids"]:
        raise ConfigError("meta_prover.termination_text: encodes to no tokens")

    context = int(model.config.max_position_embeddings)
    examples = list(data.train.examples) + list(data.held_out)
    longest = max(len(e.prompt_ids) for e in examples)
    if longest >= context:
        raise ConfigError(f"data.max_prompt_tokens: the longest prompt has {longest} tokens, the model's context is "
                          f"{context}: no room for an output token (lower data.max_prompt_tokens with data.overlong "
                          "skip)")
    r = cfg.rollout
    need = min(longest + r.max_new_tokens, context)
    if r.num_blocks is not None and r.num_blocks * r.block_size < need:
        raise ConfigError(f"rollout.num_blocks: {r.num_blocks} blocks of {r.block_size} tokens hold "
                          f"{r.num_blocks * r.block_size} tokens, fewer than one sequence of the run needs ({need}: "
                          "the longest prompt and rollout.max_new_tokens)")
    resume = "no"
    if cfg.checkpoint.resume:
        found = ckpt.find_resumable(cfg.checkpoint_dir, log=lambda msg: print(msg, flush=True))
        resume = found or f"nothing to resume in {cfg.checkpoint_dir}: starts afresh"

    params = sum(p.numel() for p in model.parameters())
    del model
    lines = [
        "check: ok, nothing generated or trained; the run would be:",
        f"  {cfg.rl.algo} ({cfg.rl.advantage_mode}), reward {cfg.reward}, seed {cfg.seed}",
        f"  model {path} ({model_summary(params, cfg.model.dtype, context)}), tokenizer {tok_path} ({len(tokenizer)} "
        "tokens)",
        f"  data {data.train.source}: {len(data.train)} training prompts, {len(data.held_out)} held out; "
        f"longest prompt {longest} tokens" + _dropped(data.sources),
        f"  {cfg.optim.steps} steps x {cfg.optim.prompts_per_step} prompts x {r.group_size} samples of up to "
        f"{r.max_new_tokens} tokens, lr {cfg.optim.lr}",
        f"  outputs in {cfg.logging.out_dir}, checkpoints in {cfg.checkpoint_dir} every {cfg.checkpoint.every} steps "
        f"(resume: {resume})",
    ]
    return "\n".join(lines)


def model_summary(params: int, dtype: str, context: int) -> str:
    return f"{params / 1e6:.2f}M parameters in {dtype}, context {context}"


def _dropped(sources: dict) -> str:
    parts = [f"{name}: {len(s.overlong_rows)} overlong, {s.skipped} malformed rows dropped"
             for name, s in sources.items() if s.overlong_rows or s.skipped]
    return ("; " + "; ".join(parts)) if parts else ""


def strip_flag(argv: list[str], flag: str = "--check") -> tuple[list[str], bool]:
    """argv without flag, and whether it was there."""
    return [a for a in argv if a != flag], flag in argv


__all__ = ["check_run", "load_model_meta", "strip_flag"]
