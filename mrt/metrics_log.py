"""Run logging: a progress bar and messages on rank 0, `metrics.jsonl` (one JSON object a step), optional TensorBoard,
and PNG plots at the end (`plot_metrics`: reward raw and smoothed, held-out accuracy over steps, mean progress by
episode index, cumulative and normalised regret).

Every step's record holds the step metrics of docs/algorithm.md: reward, accuracy, progress/episode_<j> (mean
progress of the j-th episode), regret, length, entropy, clip_fraction, kl, tokens_per_s, time/rollout and time/update,
prefix_cache_hit_rate; plus loss, lr, grad_norm and the other loss statistics. Evaluation records carry
"eval/..." keys and `"kind": "eval"`. With `logging.wandb.project` set, every scalar, the plots and the config go
to Weights & Biases too (mrt.wandb_sink).
"""
from __future__ import annotations

import json
import math
import os


class MetricsLogger:
    def __init__(self, out_dir: str, *, rank: int = 0, total_steps: int = 0, initial_step: int = 0,
                 progress_bar: bool = True, tensorboard: bool = False, wandb=None, run_config: dict | None = None):
        from .wandb_sink import check_available
        self.rank = rank
        self.out_dir = out_dir
        self.records: list[dict] = []
        self._file = None
        self._bar = None
        self._tb = None
        self._wandb = None
        use_wandb = check_available(wandb)      # every rank: a missing package is every rank's one-line error
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
        # Rewritten aside and renamed over: a process killed here leaves the old file whole, never a cut one.
        with open(self.path + ".tmp", "w") as f:
            for rec in kept:
                f.write(json.dumps(rec) + "\n")
        os.replace(self.path + ".tmp", self.path)
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
        if use_wandb:          # logging.wandb (mrt.wandb_sink): every scalar, the plots, the config
            from .wandb_sink import WandbSink
            self._wandb = WandbSink(wandb, out_dir, run_config)

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
        if self._wandb is not None:
            self._wandb.log(rec)
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
        paths = plot_metrics(self.records, self.out_dir) if plots else []
        if self._wandb is not None:
            self._wandb.finish(paths)
            self._wandb = None
        return paths


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)        # JSON has no nan / inf
    return v


EMA_BETA = 0.9   # smoothing of the plotted curves: about the last 10 steps weigh in


def ema(values, beta: float = EMA_BETA) -> list[float]:
    """Bias-corrected exponential moving average: m_t = beta m_{t-1} + (1 - beta) x_t, m_0 = 0, shown as
    m_t / (1 - beta^t), so the first points are not pulled toward 0 (Adam's correction)."""
    if not 0 <= beta < 1:
        raise ValueError(f"ema: beta must be in [0, 1), got {beta}")
    out, m = [], 0.0
    for t, x in enumerate(values, 1):
        m = beta * m + (1.0 - beta) * float(x)
        out.append(m / (1.0 - beta ** t))
    return out


def series(records: list[dict], key: str) -> tuple[list, list[float]]:
    """(steps, values) of the records that hold a finite number under key (non-finite ones are logged as text)."""
    steps, vals = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(r.get("step", len(steps)))
            vals.append(float(v))
    return steps, vals


def _raw_and_smooth(ax, records: list[dict], key: str, label: str, color: str) -> bool:
    """The raw values faint and their EMA solid, in one color; False (nothing drawn) when key is never logged."""
    x, y = series(records, key)
    if not x:
        return False
    ax.plot(x, y, color=color, alpha=0.25, lw=1)
    ax.plot(x, ema(y), color=color, lw=2, label=f"{label} (EMA {EMA_BETA})")
    return True


def _same_series(records: list[dict], a: str, b: str) -> bool:
    (xa, ya), (xb, yb) = series(records, a), series(records, b)
    return xa == xb and all(abs(p - q) <= 1e-9 for p, q in zip(ya, yb))


def _eval_curve(ax, evals: list[dict], key: str, label: str, color: str) -> bool:
    x, y = series(evals, key)
    if x:
        ax.plot(x, y, "o-", color=color, markersize=4, label=label)
    return bool(x)


def plot_metrics(records: list[dict], out_dir: str) -> list[str]:
    """reward_accuracy.png, progress_by_episode.png, regret.png from the records; returns the paths.

    reward_accuracy.png: training reward (and accuracy, only where it differs from the reward, i.e. with a format
    reward; and the kept groups' reward under dynamic sampling, where it differs), raw and EMA; held-out accuracy over steps (every eval record); the fraction of groups with zero reward
    variance when logged. progress_by_episode.png: mean progress of the j-th episode where steps have one, and the
    share of traces that have it. regret.png:
    cumulative regret (sum over episodes of 1 - J, which falls with fewer episodes) beside the normalised regret at
    the run's budget (1 - area / C0, fair across lengths), each for training traces and held-out evaluations.
    """
    train = [r for r in records if r.get("kind", "train") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    return [_plot_reward(plt, train, evals, out_dir), _plot_progress(plt, train, out_dir),
            _plot_regret(plt, train, evals, out_dir)]


def _plot_reward(plt, train: list[dict], evals: list[dict], out_dir: str) -> str:
    zero_var = bool(series(train, "zero_variance_groups")[0])
    fig, axes = plt.subplots(1, 3 if zero_var else 2, figsize=(13 if zero_var else 9, 3.8), squeeze=False)
    ax = axes[0][0]
    _raw_and_smooth(ax, train, "reward", "reward", "C0")
    same = _same_series(train, "reward", "accuracy")
    if not same:
        _raw_and_smooth(ax, train, "accuracy", "accuracy", "C1")
    # Dynamic sampling trains on the mixed groups only, whose reward leans to 0.5: drawn apart from the policy's.
    if series(train, "reward_kept")[0] and not _same_series(train, "reward", "reward_kept"):
        _raw_and_smooth(ax, train, "reward_kept", "reward of the kept groups", "C4")
    ax.set_title("training reward" + (" (= accuracy)" if same else " and accuracy"), fontsize=10)
    ax = axes[0][1]
    _eval_curve(ax, evals, "eval/accuracy", "held-out accuracy", "C2")
    ax.set_title(f"held-out accuracy ({len(evals)} evaluations)", fontsize=10)
    if zero_var:
        ax = axes[0][2]
        _raw_and_smooth(ax, train, "zero_variance_groups", "groups with zero reward variance", "C3")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("groups without signal (all right or all wrong)", fontsize=10)
    _finish(axes[0])
    return _save(fig, out_dir, "reward_accuracy.png")


def _plot_progress(plt, train: list[dict], out_dir: str) -> str:
    """Left: mean progress J_j - J_(j-1) of the j-th episode at each step whose traces have one (markers), its EMA
    drawn only across consecutive steps with data, so a stretch of steps without that episode is a gap, not a line.
    Right: the share of a step's traces that have a j-th episode (`episode_share/j`), so a reader sees episodes
    appear or vanish and can weigh what each one adds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    idx = sorted({int(k.split("_")[-1]) for r in train for k in r if k.startswith("progress/episode_")})
    for j in idx:
        x, y = series(train, f"progress/episode_{j}")
        color = f"C{j % 10}"
        ax.plot(x, y, "o", color=color, markersize=2.5, alpha=0.35)
        label = f"episode {j} (EMA {EMA_BETA} within runs of steps)"
        for xs, ys in _consecutive_runs(x, y):
            if len(xs) > 1:
                ax.plot(xs, ema(ys), color=color, lw=2, label=label)
                label = None
        if label is not None:   # no run of two steps: the markers alone, labelled
            ax.plot([], [], "o", color=color, label=f"episode {j}")
    ax.axhline(0.0, color="gray", lw=0.5)
    ax.set_ylabel("mean progress J_j - J_(j-1)")
    ax.set_title("mean progress by episode index" + ("" if idx else " (no episodes logged)"), fontsize=10)
    ax = axes[1]
    logged = sorted({int(k.split("/")[-1]) for r in train for k in r if k.startswith("episode_share/")})
    shares = [j for j in logged if any(series(train, f"episode_share/{j}")[1])]   # indices no trace ever had: unplotted
    for j in shares:
        ax.plot(*series(train, f"episode_share/{j}"), color=f"C{j % 10}", lw=1.5, label=f"episode {j}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of traces")
    never = [j for j in logged if j not in shares]
    ax.set_title("traces that have episode j" + ("" if logged else " (not logged)")
                 + (f" (never: episode {', '.join(map(str, never))})" if never else ""), fontsize=10)
    _finish(axes)
    axes[0].figure.suptitle("markers: raw per step; solid: EMA over consecutive steps", fontsize=8, x=0.99,
                            ha="right")
    return _save(fig, out_dir, "progress_by_episode.png")


def _consecutive_runs(x: list, y: list[float]) -> list[tuple[list, list[float]]]:
    """Split (steps, values) where a step is missing: [(steps, values) of each run of consecutive steps]."""
    runs: list[tuple[list, list[float]]] = []
    for i, (a, v) in enumerate(zip(x, y)):
        if i == 0 or a != x[i - 1] + 1:
            runs.append(([], []))
        runs[-1][0].append(a)
        runs[-1][1].append(v)
    return runs


def _plot_regret(plt, train: list[dict], evals: list[dict], out_dir: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("regret", "eval/regret", "cumulative regret: sum of (1 - J) over episodes"),
              ("regret_normalized", "eval/regret_normalized", "normalised regret at the budget: 1 - area / C0"))
    for ax, (key, eval_key, title) in zip(axes, panels):
        drawn = _raw_and_smooth(ax, train, key, "training traces", "C0")
        drawn = _eval_curve(ax, evals, eval_key, "held-out", "C2") or drawn
        ax.set_title(title + ("" if drawn else " (not logged)"), fontsize=10)
    _finish(axes)
    return _save(fig, out_dir, "regret.png")


def _finish(axes) -> None:
    axes[0].figure.suptitle(f"faint: raw per step; solid: EMA {EMA_BETA} (bias-corrected)", fontsize=8, x=0.99,
                            ha="right")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
