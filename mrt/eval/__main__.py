"""`python -m mrt.eval --model DIR --data FILE [--budgets ...] [--samples N] [--out DIR] [--config FILE] [--check]`.

Bad input (a setting, a dataset file or row, a model folder or hub id, a tokenizer) is a mrt.errors.UserError and ends
with one `error: ...` line and exit code 2, as train.py does (mrt.cli.run_cli); anything else is a bug and keeps its
traceback. `--check` reads and validates the settings, every dataset, every model folder (weights read and checked on
the meta device, nothing kept) and its tokenizer, and the budgets against each model's context with the real prompts;
prints what the evaluation would run and exits 0, without generating.
"""
import sys

from mrt.cli import run_cli
from mrt.config import ConfigError

from .config import parse_args
from .report import markdown_table
from .run import run


def check(cfg) -> str:
    """Validate cfg as run() reads it (the same errors), without loading weights onto a device or generating."""
    import torch

    from mrt.check import load_model_meta
    from mrt.hub import load_checked_tokenizer, resolve_model_path

    from .evaluate import check_context, format_prompts
    from .problems import get_verifier, load_dataset
    from .run import check_budget, model_context

    datasets = [load_dataset(d, prompt_column=cfg.prompt_column, answer_column=cfg.answer_column, limit=cfg.limit)
                for d in cfg.data]
    for ds in datasets:
        get_verifier(cfg.verifier or ds.verifier)
    dtype = getattr(torch, cfg.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"dtype must name a torch dtype (float32, bfloat16, ...), got {cfg.dtype!r}")
    lines = ["check: ok, nothing generated; the evaluation would be:"]
    for name, path in cfg.named_models():
        path = resolve_model_path(path, key="--model")
        context = model_context(path)
        check_budget(cfg, name, context)
        model = load_model_meta(path, dtype, "--model")
        tokenizer = load_checked_tokenizer(path, model.config.vocab_size, key="--model")
        for ds in datasets:
            prompts = format_prompts(tokenizer, ds.problems, cfg)
            text = cfg.termination_text if cfg.termination_text is not None else ds.termination_text
            check_context(cfg, prompts, tokenizer.encode(text, add_special_tokens=False), context)
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"  model {name}: {path} ({params / 1e6:.2f}M parameters, context {context}, {cfg.dtype} on "
                     f"{cfg.device})")
    for ds in datasets:
        lines.append(f"  dataset {ds.name}: {len(ds.problems)} problems, verifier {cfg.verifier or ds.verifier}")
    lines.append(f"  budgets {cfg.budgets}, {cfg.samples} samples a problem at temperature {cfg.temperature}, "
                 f"extrapolation rounds {cfg.extrapolation_rounds}; outputs in {cfg.out}")
    return "\n".join(lines)


def evaluate(argv: list[str]) -> None:
    """Parse argv, then check (`--check`) or run the evaluation and print its table; a user error raises."""
    checking = "--check" in argv
    cfg = parse_args([a for a in argv if a != "--check"])
    if checking:
        print(check(cfg))
        return
    results = run(cfg)
    print(markdown_table(results))
    print(f"wrote {cfg.out}/results.json, results.md and plots")


def main(argv=None) -> int:
    """The exit code: 0, or 2 after one `error:` line for a user error (mrt.cli.run_cli)."""
    return run_cli(evaluate, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
