"""The run's configuration: one tree of dataclasses, validated on construction.

Sources, in order: the dataclass defaults (which ARE the embedded default, `configs/tiny_mrt.yaml`), a YAML preset,
then dotted command-line overrides (`--rl.alpha 0.5` or `--rl.alpha=0.5`; a bare `--checkpoint.resume` sets a bool to
true). Every value is parsed to its field's type; an unknown key or a bad value raises ConfigError naming the dotted
key; a key of an earlier version (REMOVED_KEYS) raises saying it was removed. The resolved config is written with the
run (`Config.save`) and reads back to an equal Config. Components read their section once through a `from_config`
(`MetaProver.from_config`, `UpdateSettings.from_config`); `RolloutConfig.logprob_temperature` is the one place the
log-probs' temperature is derived from the sampling temperature. The tree holds the evaluation's settings too:
`eval` (HeldOutConfig) is the held-out accuracy measured during training, `evaluate` (EvalConfig) is
`python -m mrt.eval`'s, whose flags map onto its fields (mrt.eval.config).

Paths starting with `mrt:` are relative to the `mrt` package (the embedded model: `mrt:assets/tiny_model`).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field

import yaml

from .errors import ConfigError  # noqa: F401 (defined there, below every module that raises it; re-exported)
from .paths import PACKAGE_DIR, resolve_path  # noqa: F401 (re-exported: `mrt:REL` paths)
from .termination import R1_TERMINATION_TEXT, resolve_termination_text  # noqa: F401 (R1_TERMINATION_TEXT re-exported)

def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _choice(value, key: str, choices) -> None:
    _need(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]   # every projection


@dataclass
class LoraConfig:
    r: int = 0                            # adapter rank; 0: no LoRA, every parameter is trained (mrt.models.lora)
    alpha: float = 16.0                   # the adapter's output is scaled by alpha / r
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))   # names, or [all-linear]
    dropout: float = 0.0                  # on the adapter's input, in the training forward only
    generation: str = "merged"            # merged (a copy with W0 + alpha/r B A) | adapters (in the engine's linears)
    save_merged: bool = False             # checkpoints also hold merged/, the adapted weights transformers loads

    def __post_init__(self):
        _need(self.r >= 0, "model.lora.r", f"must be >= 0 (0: no LoRA), got {self.r}")
        _need(self.alpha > 0, "model.lora.alpha", f"must be > 0, got {self.alpha}")
        _need(0 <= self.dropout < 1, "model.lora.dropout", f"must be in [0, 1), got {self.dropout}")
        _need(len(self.target_modules) > 0 and all(isinstance(t, str) and t.strip() for t in self.target_modules),
              "model.lora.target_modules", f"must list module names (e.g. q_proj, v_proj), got {self.target_modules}")
        _choice(self.generation, "model.lora.generation", ("merged", "adapters"))


@dataclass
class ModelConfig:
    path: str = "mrt:assets/tiny_model"   # HF folder (config.json, *.safetensors, tokenizer files) or hub id
    tokenizer_path: str | None = None     # None: the model folder
    revision: str | None = None           # of a hub id (branch, tag or commit); None: the default branch
    dtype: str = "float32"                # parameters and compute: float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)   # low-rank adapters instead of full fine-tuning

    def __post_init__(self):
        _need(bool(self.path), "model.path", "must be set (a Hugging Face model folder)")
        _choice(self.dtype, "model.dtype", ("float32", "bfloat16", "float16"))


@dataclass
class DataConfig:
    path: str = "countdown"               # a file / folder, a task name when format is 'task', a hub dataset id
    format: str = "task"                  # auto | jsonl | parquet | datasets | hub | task
    prompt_column: str = "problem"
    answer_column: str = "answer"
    chat_template: bool = True            # tokenizer.apply_chat_template(add_generation_prompt=True), else raw text
    system_prompt: str | None = None
    skip_malformed: bool = False          # False: a malformed row raises naming file and row; True: skipped, counted
    max_prompt_tokens: int = 128          # longer prompts are handled by `overlong`
    overlong: str = "error"               # error: stop, naming the row | skip: drop it (listed in the run folder)
    split: str = "train"                  # the split of a saved `datasets` DatasetDict or of a hub dataset
    revision: str | None = None           # of a hub dataset; None: the default branch
    num_problems: int = 2000              # size of a synthetic task's training set (countdown has ~2,140)

    def __post_init__(self):
        _need(bool(self.path), "data.path", "must be set")
        _choice(self.format, "data.format", ("auto", "jsonl", "parquet", "datasets", "hub", "task"))
        _choice(self.overlong, "data.overlong", ("error", "skip"))
        _need(bool(self.prompt_column), "data.prompt_column", "must be a column name")
        _need(bool(self.answer_column), "data.answer_column", "must be a column name")
        _need(self.max_prompt_tokens > 0, "data.max_prompt_tokens", f"must be > 0, got {self.max_prompt_tokens}")
        _need(self.num_problems > 0, "data.num_problems", f"must be > 0, got {self.num_problems}")


@dataclass
class RolloutConfig:
    group_size: int = 8                   # G samples per prompt
    max_new_tokens: int = 80              # L, completion budget (countdown: 3 attempts and the answer)
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int | None = None
    block_size: int = 16
    num_blocks: int | None = None         # None: sized from memory_fraction
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192    # token budget of one engine step
    enable_prefix_caching: bool = True
    memory_fraction: float = 0.5
    cuda_graphs: bool = True              # decode steps replayed as CUDA graphs on a GPU (no effect on the CPU)

    def __post_init__(self):
        _need(self.group_size >= 1, "rollout.group_size", f"must be >= 1, got {self.group_size}")
        _need(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _need(self.temperature >= 0, "rollout.temperature", f"must be >= 0, got {self.temperature}")
        _need(0 < self.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
        _need(self.top_k is None or self.top_k >= 1, "rollout.top_k", f"must be >= 1 or null, got {self.top_k}")
        _need(self.block_size >= 1, "rollout.block_size", f"must be >= 1, got {self.block_size}")
        _need(self.num_blocks is None or self.num_blocks >= 1, "rollout.num_blocks", "must be >= 1 or null")
        _need(self.max_num_seqs >= 1, "rollout.max_num_seqs", f"must be >= 1, got {self.max_num_seqs}")
        _need(self.max_num_batched_tokens >= 1, "rollout.max_num_batched_tokens", "must be >= 1")
        _need(0 < self.memory_fraction <= 1, "rollout.memory_fraction", "must be in (0, 1]")

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the engine's log-probs, log_softmax(logits / T): the sampling temperature, 1 when
        greedy (temperature 0). The training forward's log-probs must use the same T to be comparable."""
        return self.temperature or 1.0


@dataclass
class EpisodesConfig:
    segmenter: str = "markers"            # markers | backtrack | fixed
    markers: list[str] = field(default_factory=lambda: ["Wait"])
    min_paragraphs: int = 1               # a boundary fewer paragraphs than this after the last one is skipped
    max_episodes: int | None = 4          # later boundaries are merged into the last episode
    chunk_tokens: int = 512               # fixed segmenter
    end_text: str | None = None           # no boundary after this text (e.g. "</think>"); None: anywhere

    def __post_init__(self):
        _choice(self.segmenter, "episodes.segmenter", ("markers", "backtrack", "fixed"))
        _need(self.segmenter != "markers" or len(self.markers) > 0, "episodes.markers",
              "must list at least one marker for the markers segmenter")
        _need(all(isinstance(m, str) and m.strip() for m in self.markers), "episodes.markers",
              "markers must be non-empty strings")
        _need(self.min_paragraphs >= 1, "episodes.min_paragraphs", f"must be >= 1, got {self.min_paragraphs}")
        _need(self.max_episodes is None or self.max_episodes >= 1, "episodes.max_episodes", "must be >= 1 or null")
        _need(self.chunk_tokens >= 1, "episodes.chunk_tokens", f"must be >= 1, got {self.chunk_tokens}")


@dataclass
class MetaProverConfig:
    enabled: bool = True
    m: int = 4                            # branches per boundary (and from the bare prompt, once per prompt)
    termination_text: str = "countdown"   # a name in mrt.termination (r1, arithmetic, countdown) or the text
    answer_max_tokens: int = 16           # countdown: an expression "( 7 * 3 ) + 9", "}", " .", end of text
    temperature: float = 0.6
    top_p: float = 0.95
    prompt_branches: bool = False         # estimate J_{-1} from the bare prompt (off: J_{-1} = 0)

    def __post_init__(self):
        _need(self.m >= 1, "meta_prover.m", f"must be >= 1, got {self.m}")
        _need(bool(self.termination_text), "meta_prover.termination_text", "must be non-empty")
        self.termination_text = resolve_termination_text(self.termination_text)
        _need(self.answer_max_tokens >= 1, "meta_prover.answer_max_tokens", "must be >= 1")
        _need(self.temperature >= 0, "meta_prover.temperature", f"must be >= 0, got {self.temperature}")
        _need(0 < self.top_p <= 1, "meta_prover.top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class RLConfig:
    algo: str = "mrt"                     # grpo | mrt (grpo = the same loop with alpha's bonus off)
    alpha: float = 1.0
    advantage_mode: str = "dense"         # dense | sum | termination_baseline
    scale_by_std: bool = True             # False: Dr. GRPO
    eps: float = 1e-6
    clip_low: float = 0.2
    clip_high: float = 0.28               # DAPO clip-higher
    kl_coef: float = 0.0                  # k3 KL to the frozen initial model; 0: no reference model
    aggregation: str = "token_mean"       # token_mean | seq_mean_token_sum | constant
    constant_normalizer: float | None = None   # required by aggregation 'constant' (e.g. max_new_tokens)
    epochs_per_batch: int = 1
    recompute_old_logp: bool = False      # old log-probs from the training forward (no grad) instead of the engine
    dynamic_sampling: bool = True         # DAPO: keep only groups with mixed rewards, drawing more prompts for them
    dynamic_sampling_max_rounds: int = 3  # cap on generation per step: at most this many rounds of B prompts
    # Which groups carry no signal and are dropped: "advantage" (the group's traces differ by at most min_spread in
    # the advantage the loss gives their tokens at equal positions: GRPO's tied outcomes, and under MRT tied outcomes
    # whose episodes made the same progress), or "outcome" (the rewards are all equal: DAPO's rule, which also drops
    # MRT's progress signal). Spreads come in steps of alpha / meta_prover.m; 0 keeps any difference.
    dynamic_sampling_filter: str = "advantage"
    dynamic_sampling_min_spread: float = 0.0

    def __post_init__(self):
        _choice(self.algo, "rl.algo", ("grpo", "mrt"))
        _choice(self.advantage_mode, "rl.advantage_mode", ("dense", "sum", "termination_baseline"))
        _choice(self.aggregation, "rl.aggregation", ("token_mean", "seq_mean_token_sum", "constant"))
        _need(self.alpha >= 0, "rl.alpha", f"must be >= 0, got {self.alpha}")
        _need(self.eps > 0, "rl.eps", f"must be > 0, got {self.eps}")
        _need(0 <= self.clip_low < 1, "rl.clip_low", f"must be in [0, 1), got {self.clip_low}")
        _need(self.clip_high >= 0, "rl.clip_high", f"must be >= 0, got {self.clip_high}")
        _need(self.kl_coef >= 0, "rl.kl_coef", f"must be >= 0, got {self.kl_coef}")
        _need(self.aggregation != "constant" or (self.constant_normalizer or 0) > 0, "rl.constant_normalizer",
              "must be > 0 when rl.aggregation is 'constant'")
        _need(self.epochs_per_batch >= 1, "rl.epochs_per_batch", f"must be >= 1, got {self.epochs_per_batch}")
        _need(self.dynamic_sampling_max_rounds >= 1, "rl.dynamic_sampling_max_rounds",
              f"must be >= 1, got {self.dynamic_sampling_max_rounds}")
        _choice(self.dynamic_sampling_filter, "rl.dynamic_sampling_filter", ("advantage", "outcome"))
        _need(self.dynamic_sampling_min_spread >= 0, "rl.dynamic_sampling_min_spread",
              f"must be >= 0, got {self.dynamic_sampling_min_spread}")


@dataclass
class OptimConfig:
    lr: float = 1e-4                      # see configs/tiny_mrt.yaml for why not larger
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_ratio: float = 0.05
    schedule: str = "cosine"              # cosine | constant | linear
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    micro_batch_tokens: int = 4096        # tokens per forward/backward; gradients accumulate over micro-batches
    steps: int = 200
    prompts_per_step: int = 16            # B, over all ranks

    def __post_init__(self):
        _need(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _need(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
              f"must be two numbers in [0, 1), got {self.betas}")
        _need(self.eps > 0, "optim.eps", f"must be > 0, got {self.eps}")
        _need(0 <= self.warmup_ratio < 1, "optim.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _choice(self.schedule, "optim.schedule", ("cosine", "constant", "linear"))
        _need(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _need(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip", "must be > 0 or null")
        _need(self.micro_batch_tokens >= 1, "optim.micro_batch_tokens", "must be >= 1")
        _need(self.steps >= 1, "optim.steps", f"must be >= 1, got {self.steps}")
        _need(self.prompts_per_step >= 1, "optim.prompts_per_step", f"must be >= 1, got {self.prompts_per_step}")


@dataclass
class CheckpointConfig:
    dir: str | None = None                # None: <logging.out_dir>/checkpoints
    every: int = 20                       # steps; 0: only at the end
    keep_last: int = 2
    resume: bool = False                  # continue from the latest checkpoint in dir
    convert_legacy: bool = False          # convert old-layout checkpoints (a pickled trainer_state.pt) you trust

    def __post_init__(self):
        _need(self.every >= 0, "checkpoint.every", f"must be >= 0, got {self.every}")
        _need(self.keep_last >= 1, "checkpoint.keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass
class WandbConfig:
    project: str | None = None            # None: no wandb (an optional dependency, imported only when set)
    name: str | None = None               # the run's name; None: wandb picks one
    mode: str = "online"                  # online | offline (a run folder under logging.out_dir) | disabled

    def __post_init__(self):
        _choice(self.mode, "logging.wandb.mode", ("online", "offline", "disabled"))
        _need(self.project is None or bool(self.project.strip()), "logging.wandb.project", "must be a name or null")


@dataclass
class LoggingConfig:
    out_dir: str = "runs/tiny_mrt"
    tensorboard: bool = False
    plots: bool = True
    progress_bar: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)   # every scalar, the end-of-run plots, the config

    def __post_init__(self):
        _need(bool(self.out_dir), "logging.out_dir", "must be set")


@dataclass
class HeldOutConfig:
    path: str | None = None               # held-out prompts file (same format/columns as data); None: the task's split
    held_out: int = 256                   # problems evaluated
    every: int = 50                       # steps; 0: only before and after training
    samples: int = 4                      # samples per problem (pass@1 averaged)
    temperature: float = 0.7              # 0: greedy
    max_new_tokens: int | None = None     # None: rollout.max_new_tokens

    def __post_init__(self):
        _need(self.held_out >= 1, "eval.held_out", f"must be >= 1, got {self.held_out}")
        _need(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        _need(self.samples >= 1, "eval.samples", f"must be >= 1, got {self.samples}")
        _need(self.temperature >= 0, "eval.temperature", f"must be >= 0, got {self.temperature}")
        _need(self.max_new_tokens is None or self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1 or null")


# Appended in turn, one a round, when the model stops thinking (the paper's extrapolation, mrt.eval.extrapolation).
EXTRAPOLATION_MARKERS = ("Wait", "But wait", "Alternatively", "But hold on")


def _opt(default, help: str):
    """A field with its help line: `python -m mrt.eval --help` prints it beside the flag (the name with dashes)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class EvalConfig:
    """The standalone evaluation, `python -m mrt.eval` (mrt.eval.run): the `evaluate:` section of the tree. Its flags
    are the field names with dashes (`--round-tokens`), its YAML file the same keys, flat or under `evaluate:`
    (mrt.eval.config). Bad values raise ConfigError naming the setting."""
    models: list[str] = _opt([], "a model folder, mrt:REL, a hub id, or NAME=DIR (NAME labels tables and plots); "
                                 "repeat --model for several")
    data: list[str] = _opt([], "a JSONL / JSON / Parquet file, or arithmetic[:N] / countdown[:N] (N held-out "
                               "problems of the synthetic task, 64 by default); repeat --data for several")
    out: str = _opt("eval_out", "output folder: results.json, results.md and the plots")
    prompt_column: str = _opt("problem", "the dataset column holding the problem")
    answer_column: str = _opt("answer", "the dataset column holding the reference answer")
    limit: int | None = _opt(None, "evaluate the first N problems of each dataset only")
    prompt_template: str = _opt("{problem}", "text around each problem, before the chat template; must contain "
                                             "{problem}")
    chat_template: bool = _opt(True, "wrap each prompt in the tokenizer's chat template (a tokenizer without one is "
                                     "an error); --no-chat-template: the raw text")
    verifier: str | None = _opt(None, "how answers are checked: math, arithmetic or countdown (default: the "
                                      "dataset's own; math for files)")
    # Traces: n samples per problem, each generated once up to the largest budget.
    budgets: list[int] = _opt([4096, 8192, 12288, 16384], "token budgets, comma-separated: accuracy and regret at "
                                                          "each (every trace runs to the largest)")
    samples: int = _opt(20, "traces per problem (pass@1 is their mean; maj@k votes over them)")
    temperature: float = _opt(0.6, "sampling temperature of the traces")
    top_p: float = _opt(1.0, "nucleus sampling of the traces (1: off)")
    seed: int = _opt(0, "seed of every sampled stream")
    # Meta-prover: after a prefix, the termination text and a short answer (greedy by default: budget forcing).
    termination_text: str | None = _opt(None, "what forces an answer after a prefix: a name (r1, arithmetic, "
                                              "countdown) or the text (default: the dataset's)")
    meta_samples: int = _opt(1, "forced answers per prefix")
    meta_temperature: float = _opt(0.0, "temperature of the forced answers (0: greedy, budget forcing)")
    meta_top_p: float = _opt(1.0, "nucleus sampling of the forced answers (1: off)")
    answer_tokens: int = _opt(32, "tokens a forced answer may take")
    regret_interpolation: str = _opt("linear", "the J-vs-tokens curve between its points for normalised regret: "
                                               "linear or step")
    curve_every: int | None = _opt(None, "tokens between points of the J curve, also the fixed-chunk episodes of "
                                         "regret per episode (default: the largest budget / 16)")
    # Extrapolation past the budget: rounds of markers when the model stops thinking (0 rounds: off).
    extrapolation_rounds: int = _opt(0, "rounds of forced further thinking past the budget (0: no extrapolation)")
    round_tokens: int = _opt(2048, "tokens one extrapolation round may take")
    eval_every: int = _opt(1, "accuracy after every N extrapolation rounds (and after the last)")
    markers: list[str] = _opt(list(EXTRAPOLATION_MARKERS), "comma-separated texts appended, one a round, when the "
                                                           "model stops thinking during extrapolation")
    think_end: list[str] = _opt(["</think>"], "comma-separated texts that end thinking (cut off before a marker is "
                                              "appended)")
    # Meta-prover forks at episode boundaries (mrt.eval.episode_forcing): the markers segmenter of training
    # (mrt.episodes) with these markers; empty: off. episode_max caps the episodes a trace (None: no cap).
    episode_markers: list[str] = _opt([], "comma-separated markers that split traces into episodes as training "
                                          "does; answers are forced at each boundary (empty: off)")
    episode_min_paragraphs: int = _opt(1, "an episode boundary fewer paragraphs than this after the previous one is "
                                          "skipped")
    episode_max: int | None = _opt(None, "at most this many episodes a trace (later boundaries merge into the "
                                         "last; default: no cap)")
    # Engine.
    dtype: str = _opt("float32", "torch dtype of the weights and the compute (float32, bfloat16, ...)")
    device: str = _opt("cpu", "torch device (cpu, cuda, cuda:1, ...)")
    block_size: int = _opt(16, "tokens per KV-cache block")
    max_num_seqs: int = _opt(256, "sequences the engine runs at once")
    max_num_batched_tokens: int = _opt(8192, "tokens in one engine step")
    progress: bool = _opt(True, "progress bars (--no-progress: none)")

    def __post_init__(self):
        self.budgets = _int_list(self.budgets, "budgets")
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise ConfigError(f"budgets must be positive token counts, got {self.budgets}")
        self.budgets = sorted(set(self.budgets))
        for name in ("samples", "meta_samples", "answer_tokens", "round_tokens", "eval_every", "block_size",
                     "max_num_seqs", "max_num_batched_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.extrapolation_rounds < 0:
            raise ConfigError(f"extrapolation_rounds must be >= 0, got {self.extrapolation_rounds}")
        if self.episode_min_paragraphs < 1:
            raise ConfigError(f"episode_min_paragraphs must be >= 1, got {self.episode_min_paragraphs}")
        if self.episode_max is not None and self.episode_max < 1:
            raise ConfigError(f"episode_max must be >= 1 or unset, got {self.episode_max}")
        if any(not isinstance(m, str) or not m.strip() for m in self.episode_markers):
            raise ConfigError(f"episode_markers must be non-empty strings, got {self.episode_markers!r}")
        if self.curve_every is not None and self.curve_every < 1:
            raise ConfigError(f"curve_every must be >= 1, got {self.curve_every}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        for name in ("temperature", "meta_temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("top_p", "meta_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.regret_interpolation not in ("linear", "step"):
            raise ConfigError(f"regret_interpolation must be 'linear' or 'step', got {self.regret_interpolation!r}")
        if self.extrapolation_rounds and not self.markers:
            raise ConfigError("extrapolation needs at least one marker")
        if self.termination_text is not None:
            self.termination_text = resolve_termination_text(self.termination_text)
        if "{problem}" not in self.prompt_template:
            raise ConfigError(f"prompt_template must contain '{{problem}}', got {self.prompt_template!r}")

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    def named_models(self) -> list[tuple[str, str]]:
        """[(name, dir)]: NAME=DIR as given, else the folder's name."""
        out = []
        for spec in self.models:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = os.path.basename(spec.rstrip("/")) or spec, spec
            out.append((name, path))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be distinct, got {names}; name them with NAME=DIR")
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _int_list(value, name: str) -> list[int]:
    """"4096,8192" or [4096, 8192] -> [4096, 8192], with an error naming the setting."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        return [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a comma-separated list of integers, got {value!r}") from None


@dataclass
class DistributedConfig:
    strategy: str = "auto"                # auto | ddp | fsdp (auto: ddp on the CPU, fsdp for large models on GPUs)
    backend: str = "auto"                 # auto | gloo | nccl

    def __post_init__(self):
        _choice(self.strategy, "distributed.strategy", ("auto", "ddp", "fsdp"))
        _choice(self.backend, "distributed.backend", ("auto", "gloo", "nccl"))


@dataclass
class ShapingTerm:
    fn: str = ""                          # module:function or file.py:function (mrt.reward_fn)
    weight: float = 1.0

    def __post_init__(self):
        _need(":" in self.fn, "shaping.fn", f"must be MODULE:FUNCTION or PATH.py:FUNCTION, got {self.fn!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    meta_prover: MetaProverConfig = field(default_factory=MetaProverConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: HeldOutConfig = field(default_factory=HeldOutConfig)        # held-out accuracy during training
    evaluate: EvalConfig = field(default_factory=EvalConfig)          # python -m mrt.eval
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    seed: int = 0
    reward: str = "countdown"             # a name in mrt.rewards.REWARDS, or module:function / file.py:function
    format_reward: float = 0.0            # added weight of the format reward (0: off)
    shaping: list[ShapingTerm] = field(default_factory=list)   # weighted terms added to the training reward only

    def __post_init__(self):
        _need(self.rl.algo != "mrt" or self.meta_prover.enabled, "meta_prover.enabled",
              "must be true when rl.algo is 'mrt' (progress needs the meta-prover)")
        _need(self.format_reward >= 0, "format_reward", f"must be >= 0, got {self.format_reward}")
        from .rewards import REWARDS
        _need(self.reward in REWARDS or ":" in self.reward, "reward",
              f"unknown reward {self.reward!r} (known: {sorted(REWARDS)}; or your own as MODULE:FUNCTION or "
              "PATH.py:FUNCTION)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.to_yaml())
        os.replace(tmp, path)

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or os.path.join(self.logging.out_dir, "checkpoints")


# ----------------------------------------------------------------------------------------------------------- parsing

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """value (from YAML, or a command-line string) -> the field type tp; ConfigError naming key if it cannot be."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            return None
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",")]
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if dataclasses.is_dataclass(tp):      # a section inside a list (e.g. shaping: [{fn: ..., weight: ...}])
        return _build(tp, value, key + ".")
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


# Keys of earlier versions: a config that still sets one gets this reason instead of "unknown config key".
REMOVED_KEYS = {
    "logging.every": "removed (every step is logged); delete it from the config",
    "rl.normalize_progress": "removed (progress is never normalised within the group); delete it from the config",
}


def _unknown_key(key: str, names) -> ConfigError:
    if key in REMOVED_KEYS:
        return ConfigError(f"{key}: {REMOVED_KEYS[key]}")
    return ConfigError(f"{key}: unknown config key (known: {', '.join(sorted(names))})")


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise _unknown_key(key, names)
        tp = hints[k]
        kwargs[k] = _build(tp, v, key + ".") if dataclasses.is_dataclass(tp) else _coerce(v, tp, key)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    """Put value at tree[a][b]... for 'a.b...', checking every part names a field (ConfigError otherwise)."""
    parts = dotted.split(".")
    cls = Config
    node = tree
    for i, p in enumerate(parts):
        key = ".".join(parts[:i + 1])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if p not in fields:
            raise _unknown_key(key, fields)
        tp = typing.get_type_hints(cls)[p]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"{key}: is a section; set one of its fields, e.g. --{key}.<field> VALUE")
            node[p] = value
            return
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{key}: is a value, not a section")
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: expected a mapping")
        cls = tp


def parse_overrides(overrides: list[str]) -> list[tuple[str, str | None]]:
    """['--a.b', '1', '--c=2', '--flag'] -> [('a.b', '1'), ('c', '2'), ('flag', None)]."""
    out, i = [], 0
    while i < len(overrides):
        arg = overrides[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"{arg}: expected --section.key VALUE or --section.key=VALUE")
        body = arg[2:]
        if "=" in body:
            k, v = body.split("=", 1)
            i += 1
        elif i + 1 < len(overrides) and not (overrides[i + 1].startswith("--") and len(overrides[i + 1]) > 2
                                             and not _is_number(overrides[i + 1])):
            k, v = body, overrides[i + 1]
            i += 2
        else:
            k, v = body, None     # a bare flag: true for a bool field
            i += 1
        out.append((k.replace("-", "_"), v))
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _field_type(dotted: str):
    cls = Config
    for p in dotted.split("."):
        tp = typing.get_type_hints(cls)[p]
        cls = tp
    return cls


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML preset at path (if any) <- dotted overrides; validated. Raises ConfigError naming the key."""
    tree: dict = {}
    if path is not None:
        try:
            with open(resolve_path(path), encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"--config: {path}: cannot be read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: {path}: not valid YAML ({' '.join(str(exc).split())})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config: {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                              f"{exc.start})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of sections")
        tree = loaded
    return config_from_dict(tree, overrides)


def config_from_dict(tree: dict, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- tree (nested sections, as in a YAML preset; not modified) <- overrides: command-line strings
    (`["--rl.alpha", "0.5"]`) or a mapping of dotted keys to values (`{"rl.alpha": 0.5}`); validated."""
    if not isinstance(tree, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(tree).__name__}")
    tree = copy.deepcopy(tree)
    if isinstance(overrides, dict):       # values as YAML would give them; None is null
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise ConfigError(f"{key!r}: an override key must be a dotted string such as 'optim.steps'")
            _set_dotted(tree, key, value)
        return _build(Config, tree)
    for key, value in parse_overrides(list(overrides or [])):
        _set_dotted(tree, key, value)
        if value is None:
            if _field_type(key) is not bool:
                raise ConfigError(f"{key}: needs a value (--{key} VALUE)")
            _set_dotted(tree, key, True)
    return _build(Config, tree)
