"""Prompt datasets: rows with a problem and an answer -> tokenised prompts.

Sources (`DataConfig.format`): `jsonl` (one JSON object a line; a `.json` file holding one array is read too),
`parquet` (needs the optional `pyarrow`), `datasets` (a folder written by `datasets`' `save_to_disk`; needs the
optional `datasets`; a DatasetDict is cut to `split`), `hub` (a Hugging Face Hub dataset id, `org/name`, through the
optional `datasets`' `load_dataset` at `revision`, cut to `split`; offline or unreachable: one DataError line saying
so), `task` (a synthetic task named by `path`, `arithmetic` or `countdown`: `num_problems` training problems, or the
held-out split), or `auto` (by the file's extension; a folder is a `datasets` folder, a known task name a task, a name in
hub spelling that is no local path a hub dataset).

A prompt is the problem through the tokenizer's chat template (a user message, after an optional system message,
with the generation prompt added) or the raw problem text. A row is malformed if the prompt or answer column is
missing, the prompt is not a non-empty string, or the answer is not a non-empty string or a number: that raises
DataError naming the file and the row, or, with `skip_malformed`, the row is skipped and counted
(`PromptDataset.skipped`). A prompt of more than `max_prompt_tokens` tokens is overlong: `overlong: error` raises
DataError naming the row, `overlong: skip` drops it and lists it in `PromptDataset.overlong_rows`, which the trainer
writes to the run folder (`write_skip_report`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from .config import DataConfig, resolve_path
from .errors import ConfigError, UserError

TASK_FORMATS = ("arithmetic", "countdown")


class DataError(UserError):
    """A malformed data file or row; the message starts with `file:row N`."""


@dataclass
class PromptExample:
    prompt_ids: list[int]
    prompt_text: str
    answer: Any                  # as stored: a string, or a number (AMC answers are floats)
    problem: str
    row: int                     # 0-based row in the source
    columns: dict = field(default_factory=dict)   # the row's other columns (a user's reward gets them)


@dataclass
class PromptDataset:
    examples: list[PromptExample]
    source: str
    skipped: int = 0
    skipped_reasons: list[str] = field(default_factory=list)   # the first few, for the log
    overlong_rows: list[int] = field(default_factory=list)     # rows dropped by `overlong: skip`

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> PromptExample:
        return self.examples[i]


def detect_format(path: str) -> str:
    from .hub import is_hub_id
    if path in TASK_FORMATS:
        return "task"
    if os.path.isdir(path):
        return "datasets"
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext in (".parquet", ".pq"):
        return "parquet"
    if is_hub_id(path) and "/" in path:
        return "hub"
    raise DataError(f"{path}: cannot tell the data format from the name; set data.format")


def _read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a JSONL file (or of a file holding one JSON array). Read as bytes and decoded line by line, so a line
    that is not UTF-8 or not JSON is a malformed row (named with its row and line), not an error of the whole file."""
    with open(path, "rb") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == b"[":          # a JSON array of objects
            raw = f.read()
            try:
                rows = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") \
                    from None
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON ({exc})") from None
            if not isinstance(rows, list):
                raise DataError(f"{path}: expected a JSON array of rows, got {type(rows).__name__}")
            yield from enumerate(rows)
            return
        row = 0
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                obj = _BadRow(f"line {line_no} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                              f"{exc.start + 1})")
            except json.JSONDecodeError as exc:
                obj = _BadRow(f"line {line_no} is not valid JSON ({exc.msg})")
            yield row, obj
            row += 1


@dataclass
class _BadRow:
    reason: str


def _read_parquet(path: str) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs the optional package pyarrow (`pip install pyarrow`)") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 (pyarrow's errors: a truncated or foreign file, a bad schema)
        why = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {why})") from None
    yield from enumerate(rows)


def _read_datasets(path: str, split: str) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: reading a saved dataset needs the optional package datasets "
                        "(`pip install datasets`)") from None
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r} (has {sorted(ds)}); set data.split")
        ds = ds[split]
    yield from enumerate(ds)


def _read_hub(name: str, split: str, revision: str | None) -> Iterator[tuple[int, Any]]:
    from .hub import offline, short_message
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: a hub dataset needs the optional package datasets (`pip install datasets`), or "
                        "give a local file in data.path") from None
    at = f" at revision {revision}" if revision else ""
    try:
        ds = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 (any failure to fetch is reported on one line)
        if offline() or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true"):
            why = "offline (HF_HUB_OFFLINE=1) and not in the local datasets cache; give a local file in data.path"
        else:
            why = f"cannot be loaded from the Hugging Face Hub ({type(exc).__name__}: {short_message(exc)})"
        raise DataError(f"{name}{at}: {why} (data.path)") from None
    yield from enumerate(ds)


def _read_task(name: str, cfg: DataConfig, split: str, seed: int, n: int | None,
               key: str) -> Iterator[tuple[int, Any]]:
    if name == "arithmetic":
        from .tasks import arithmetic
        count = n if n is not None else cfg.num_problems
        for i, p in enumerate(arithmetic.generate_problems(count, seed=seed, split=split)):
            yield i, {cfg.prompt_column: p.text, cfg.answer_column: str(p.answer)}
        return
    if name == "countdown":
        from .tasks import countdown
        count = n if n is not None else cfg.num_problems
        try:
            problems = countdown.generate_problems(count, seed=seed, split=split)
        except ValueError as exc:
            raise DataError(f"{name}: {exc} ({key})") from None
        for i, p in enumerate(problems):
            yield i, {cfg.prompt_column: p.text, cfg.answer_column: p.answer}   # the answer is the problem itself
        return
    raise DataError(f"{name}: unknown task (known: {list(TASK_FORMATS)})")


def read_rows(path: str, fmt: str, cfg: DataConfig, split: str = "train", seed: int = 0,
              max_rows: int | None = None, key: str | None = None) -> Iterator[tuple[int, Any]]:
    """(row, object) pairs of a source, for training and evaluation alike (mrt.eval.problems); a row that cannot be
    parsed is a `_BadRow` that `check_row` names. key: the setting that named the source, for the messages (None:
    training's, data.path)."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "task":
        return _read_task(path, cfg, split, seed, max_rows, key or "data.num_problems / eval.held_out")
    key = key or "data.path"
    if fmt == "hub":
        return _read_hub(path, cfg.split, cfg.revision)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder ({key})")
    if fmt in ("jsonl", "parquet") and os.path.isdir(path):
        raise DataError(f"{path}: a folder, not a {fmt} file ({key}; format {fmt})")
    if fmt in ("jsonl", "parquet") and not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot be read (no permission) ({key})")
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "datasets":
        return _read_datasets(path, cfg.split)
    raise DataError(f"{path}: unknown data format {fmt!r}")


def format_prompt(problem: str, tokenizer, chat_template: bool = True, system_prompt: str | None = None, *,
                  key: str = "data.chat_template") -> str:
    """The prompt text: the chat template with a generation prompt, or the raw problem. The chat template is asked
    for explicitly: a tokenizer without one is an error naming key, never a silent fall back to the raw text."""
    if not chat_template:
        return problem if system_prompt is None else f"{system_prompt}\n\n{problem}"
    if not getattr(tokenizer, "chat_template", None):
        off = f"pass --no-{key[2:]}" if key.startswith("--") else f"set {key} to false"
        raise DataError(f"{key}: the tokenizer has no chat template; {off} for the raw text")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": problem}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(problem: str, tokenizer, chat_template: bool = True, system_prompt: str | None = None, *,
               key: str = "data.chat_template") -> tuple[str, list[int]]:
    """(text, token ids) of one prompt, for training and evaluation alike: format_prompt's text, tokenised with the
    tokenizer's special tokens only for the raw text (the chat template writes its own)."""
    text = format_prompt(problem, tokenizer, chat_template, system_prompt, key=key)
    return text, list(tokenizer(text, add_special_tokens=not chat_template)["input_ids"])


def check_row(obj, cfg: DataConfig) -> str | None:
    """Why the row is malformed, or None."""
    if isinstance(obj, _BadRow):
        return obj.reason
    if not isinstance(obj, dict):
        return f"expected an object with columns, got {type(obj).__name__}"
    for col in (cfg.prompt_column, cfg.answer_column):
        if col not in obj:
            return f"missing column {col!r} (has {sorted(obj)})"
    p, a = obj[cfg.prompt_column], obj[cfg.answer_column]
    if not isinstance(p, str):
        return f"column {cfg.prompt_column!r} must be a string, got {type(p).__name__}"
    if not p.strip():
        return f"column {cfg.prompt_column!r} is empty"
    if isinstance(a, bool) or not isinstance(a, (str, int, float)):
        return f"column {cfg.answer_column!r} must be a string or a number, got {type(a).__name__}"
    if isinstance(a, str) and not a.strip():
        return f"column {cfg.answer_column!r} is empty"
    return None


def load_prompts(cfg: DataConfig, tokenizer, *, path: str | None = None, split: str = "train", seed: int = 0,
                 max_rows: int | None = None) -> PromptDataset:
    """Read, validate and tokenise the prompts of cfg (or of `path`, e.g. the eval file, with cfg's columns).

    split / seed / max_rows: for a task, the split ('train' | 'heldout'), its seed and its size (default
    cfg.num_problems); for files, max_rows keeps the first rows only.
    """
    src = resolve_path(path if path is not None else cfg.path)
    fmt = cfg.format if path is None else ("auto" if cfg.format == "task" and path not in TASK_FORMATS else cfg.format)
    out = PromptDataset([], src)
    for row, obj in read_rows(src, fmt, cfg, split=split, seed=seed, max_rows=max_rows):
        if max_rows is not None and len(out.examples) >= max_rows:
            break
        why = check_row(obj, cfg)
        if why is not None:
            if not cfg.skip_malformed:
                raise DataError(f"{src}: row {row}: {why} (set data.skip_malformed to skip such rows)")
            out.skipped += 1
            if len(out.skipped_reasons) < 10:
                out.skipped_reasons.append(f"row {row}: {why}")
            continue
        problem = obj[cfg.prompt_column]
        text, ids = prompt_ids(problem, tokenizer, cfg.chat_template, cfg.system_prompt)
        if len(ids) > cfg.max_prompt_tokens:
            if cfg.overlong == "error":
                raise DataError(f"{src}: row {row}: prompt has {len(ids)} tokens, more than data.max_prompt_tokens="
                                f"{cfg.max_prompt_tokens} (raise it, or set data.overlong to skip to drop such rows)")
            out.overlong_rows.append(row)
            continue
        others = {k: v for k, v in obj.items() if k not in (cfg.prompt_column, cfg.answer_column)}
        out.examples.append(PromptExample(ids, text, obj[cfg.answer_column], problem, row, others))
    if not out.examples:
        raise DataError(f"{src}: no usable rows ({out.skipped} malformed, {len(out.overlong_rows)} longer than "
                        f"data.max_prompt_tokens={cfg.max_prompt_tokens})")
    return out


SKIP_REPORT = "data_skipped.json"


def write_skip_report(datasets: dict[str, PromptDataset], out_dir: str) -> str | None:
    """Write `<out_dir>/data_skipped.json`: per dataset (train, eval), how many rows were dropped and which (the
    overlong rows in full, the malformed ones' first reasons). None, and no file, when nothing was dropped."""
    report = {name: {"source": ds.source, "overlong": len(ds.overlong_rows), "overlong_rows": ds.overlong_rows,
                     "malformed": ds.skipped, "malformed_reasons": ds.skipped_reasons}
              for name, ds in datasets.items() if ds.overlong_rows or ds.skipped}
    if not report:
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, SKIP_REPORT)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


@dataclass
class RunData:
    """A run's prompts: the training set, the held-out problems, and every source read (name -> dataset; their dropped
    rows go to the run folder, write_skip_report)."""
    train: PromptDataset
    held_out: list[PromptExample]
    sources: dict[str, PromptDataset]


def load_run_data(cfg, tokenizer) -> RunData:
    """The training prompts and the held-out ones of a run's config (mrt.config.Config), as the trainer and
    `train.py --check` both read them: held-out problems from eval.path, else the task's held-out split, else the last
    eval.held_out rows of the training file (which then leave the training set)."""
    train = load_prompts(cfg.data, tokenizer, seed=cfg.seed)
    sources = {"train": train}
    n_eval = cfg.eval.held_out
    if cfg.eval.path is not None:
        sources["eval"] = load_prompts(cfg.data, tokenizer, path=cfg.eval.path, max_rows=n_eval)
        held_out = sources["eval"].examples
    elif cfg.data.format == "task":
        held_out = load_prompts(cfg.data, tokenizer, split="heldout", seed=cfg.seed, max_rows=n_eval).examples
    else:   # hold out the last rows of the training file
        if len(train) <= n_eval:
            raise ConfigError(f"eval.held_out: {n_eval} held-out rows leave none of the {len(train)} training rows; "
                              "lower it or set eval.path")
        held_out = train.examples[-n_eval:]
        train.examples = train.examples[:-n_eval]
    return RunData(train, held_out, sources)
