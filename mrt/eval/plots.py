"""Plots of an evaluation, several models on each panel (base, GRPO, MRT: a run's effect at a glance).

One PNG per dataset with panels: accuracy at budgets (budget forcing), normalised regret at budgets, maj@k against
total tokens (k * mean tokens), meta-prover J against tokens, and extrapolation accuracy when measured.
`plot_accuracy_vs_tokens` draws the benchmarks' comparison over seeds: accuracy against the thinking budget, one
band a method, the budgets past training shaded.

The J panel draws, per model, one curve that rises in x: the mean over problems of J on a common token grid with its
95% band (`curve_grid`, from `mrt.eval.stats.curve_band`). Results without a grid (older files) get their mean points
as markers only: those points are means of tokens and of J at each budget, and a trace that ended early puts its own
(shorter) length at later budgets, so joining them in budget order would draw a line that runs back on itself.
"""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    """matplotlib.pyplot on the file-only backend, imported when a plot is drawn: importing mrt.eval (its __init__
    names these functions) or anything that imports a module of it never loads matplotlib."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _panels(has_extrapolation: bool) -> list[tuple[str, str, str, str, str]]:
    """(title, x key, y key, x label, y label); nested keys are dotted."""
    p = [("accuracy at budget (budget forcing)", "budgets", "accuracy_at_budget", "thinking budget (tokens)",
          "accuracy"),
         ("normalised regret", "budgets", "normalised_regret_at_budget", "budget C0 (tokens)", "regret"),
         ("maj@k", "tokens_for_maj@k", "maj@k", "total tokens (k x mean)", "accuracy"),
         ("meta-prover J (mean over problems, 95% band)", "curve.tokens", "curve.J",
          "tokens (prompt + prefix + answer)", "mean J")]
    if has_extrapolation:
        p.append(("extrapolation", "extrapolation.tokens", "extrapolation.accuracy", "thinking tokens", "accuracy"))
    return p


def _get(r: dict, key: str):
    for k in key.split("."):
        r = r[k]
    return r


def _draw_j(ax, r: dict, color) -> None:
    """One model's J curve: the grid mean and its band, or (no grid) the mean points unjoined."""
    g = r.get("curve_grid")
    if g:
        ax.plot(g["tokens"], g["J"], color=color, label=r["model"])
        # J lies in [0, 1]; the t-band of a mean of 0/1-valued J can spill past it with few problems.
        ax.fill_between(g["tokens"], [max(v, 0.0) for v in g["low"]], [min(v, 1.0) for v in g["high"]],
                        color=color, alpha=0.2, lw=0)
    elif r.get("curve"):
        ax.plot(r["curve"]["tokens"], r["curve"]["J"], "o", color=color, markersize=3, label=r["model"])


def plot_results(results: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per dataset under out_dir; returns the paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ds in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == ds]
        panels = _panels(any(r.get("extrapolation") for r in rows))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, (title, xk, yk, xl, yl) in zip(axes[0], panels):
            for i, r in enumerate(rows):
                color = colors[i % len(colors)]
                if yk == "curve.J":
                    _draw_j(ax, r, color)
                    continue
                try:
                    x, y = _get(r, xk), _get(r, yk)
                except (KeyError, TypeError):
                    continue
                ax.plot(x, y, marker="o", markersize=3, color=color, label=r["model"])
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(ds)
        fig.tight_layout()
        path = out / f"{ds}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_accuracy_vs_tokens(series: dict[str, tuple[list[float], list[float], list[float]]], train_budget: float,
                            path: str | Path, *, title: str = "accuracy against thinking tokens") -> Path:
    """One panel: per method, accuracy (budget forcing) against the thinking budget with its 95% band, the training
    budget a vertical line and the budgets past it shaded (the extrapolation region).

    series[method] = (budgets, mean accuracy, band half-width); a NaN half-width (one seed) draws no band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    right = max(max(x) for x, _, _ in series.values())
    ax.axvspan(train_budget, right, color="0.9", lw=0, label="past the training budget")
    ax.axvline(train_budget, color="0.4", ls="--", lw=1)
    ax.annotate(f"training budget {train_budget:g}", (train_budget, 0.02), xycoords=("data", "axes fraction"),
                rotation=90, fontsize=8, color="0.3", ha="right", va="bottom")
    for i, (name, (x, mean, half)) in enumerate(series.items()):
        color = colors[i % len(colors)]
        ax.plot(x, mean, color=color, lw=1.5, label=name)
        if all(h == h for h in half):   # a mean of 0/1 accuracies: the band is clipped to [0, 1]
            ax.fill_between(x, [max(m - h, 0.0) for m, h in zip(mean, half)],
                            [min(m + h, 1.0) for m, h in zip(mean, half)], color=color, alpha=0.15, lw=0)
    ax.set_xlim(0, right)
    ax.set_xlabel("thinking budget (output tokens, budget forcing)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
