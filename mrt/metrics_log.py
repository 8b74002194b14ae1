"""Run logging: a progress bar and messages on rank 0, `metrics.jsonl` (one JSON object a step), optional TensorBoard,
and PNG plots at the end (reward and accuracy over steps, mean progress by episode index, regret).

Every step's record holds MRT.md step 5's metrics: reward, accuracy, progress/episode_<j> (mean progress of the
j-th episode), regret, length, entropy, clip_fraction, kl, tokens_per_s, time/rollout and time/update,
prefix_cache_hit_rate; plus loss, lr, grad_norm and the other loss statistics. Evaluation records carry
"eval/..." keys and `"kind": "eval"`.
"""
from __future__ import annotations

import json
import math
import os


class MetricsLogger:
    def __init__(self, out_dir: str, *, rank: int = 0, total_steps: int = 0, initial_step: int = 0,
                 progress_bar: bool = True, tensorboard: bool = False):
        self.rank = rank
        self.out_dir = out_dir
        self.records: list[dict] = []
        self._file = None
        self._bar = None
        self._tb = None
        if rank != 0:
            return
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "metrics.jsonl")
        # Resuming appends; records of steps past the resume point (from a run killed after its last checkpoint)
        # are dropped so each step appears once.
        kept = []
        if initial_step > 0 and os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if rec.get("step", 0) <= initial_step:
                        kept.append(rec)
        self.records = kept
        with open(self.path, "w") as f:
            for rec in kept:
                f.write(json.dumps(rec) + "\n")
        self._file = open(self.path, "a")
        if progress_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:
                self.info("logging.tensorboard: tensorboard is not installed; skipping it")

    def info(self, msg: str) -> None:
        if self.rank != 0:
            return
        if self._bar is not None:
            self._bar.write(msg)
        else:
            print(msg, flush=True)

    def log(self, record: dict, *, advance: bool = True) -> None:
        if self.rank != 0:
            return
        rec = {k: _plain(v) for k, v in record.items()}
        self.records.append(rec)
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        step = rec.get("step", 0)
        if self._tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None and advance:
            self._bar.update(1)
            post = {k: rec[k] for k in ("reward", "accuracy", "regret", "loss") if k in rec}
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in post.items() if isinstance(v, float)})

    def close(self, plots: bool = True) -> list[str]:
        if self.rank != 0:
            return []
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
        return plot_metrics(self.records, self.out_dir) if plots else []


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)        # JSON has no nan / inf
    return v


def plot_metrics(records: list[dict], out_dir: str) -> list[str]:
    """reward_accuracy.png, progress_by_episode.png, regret.png from the step records; returns the paths."""
    train = [r for r in records if r.get("kind", "train") == "train"]
    if not train:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    steps = [r["step"] for r in train]

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("reward", "accuracy"):
        ax.plot(steps, [r.get(key, float("nan")) for r in train], label=key)
    evals = [r for r in records if r.get("kind") == "eval"]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval/accuracy"] for r in evals], "o--", label="held-out accuracy")
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title("reward and accuracy")
    paths.append(_save(fig, out_dir, "reward_accuracy.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    idx = sorted({int(k.split("_")[-1]) for r in train for k in r if k.startswith("progress/episode_")})
    for j in idx:
        key = f"progress/episode_{j}"
        ax.plot(steps, [r.get(key, float("nan")) for r in train], label=f"episode {j}")
    if idx:
        # The run's mean over steps, by episode index, as bars in the legend's order.
        ax.axhline(0.0, color="gray", lw=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("mean progress")
    ax.set_title("mean progress by episode index")
    if idx:
        ax.legend()
    paths.append(_save(fig, out_dir, "progress_by_episode.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r.get("regret", float("nan")) for r in train], label="regret (train traces)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval/regret"] for r in evals], "o--", label="held-out regret")
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title("cumulative regret")
    paths.append(_save(fig, out_dir, "regret.png"))
    return paths


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
