"""results.json (every number, with the config) and a Markdown table (one row per model and dataset)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def markdown_table(results: list[dict]) -> str:
    """Accuracy in percent; regret as a fraction (0 best, 1 worst)."""
    if not results:
        return "(no results)\n"
    budgets = results[0]["budgets"]
    head = (["model", "dataset", "pass@1", f"maj@{len(results[0]['maj@k'])}", "tokens"]
            + [f"acc@{b}" for b in budgets] + [f"regret@{b}" for b in budgets] + ["regret/episode"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["model"], r["dataset"], _fmt(r["pass@1"]), _fmt(r["maj@k"][-1]), _fmt(r["mean_tokens"], False)]
        row += [_fmt(a) for a in r["accuracy_at_budget"]]
        row += [f"{x:.3f}" for x in r["normalised_regret_at_budget"]]
        row += [f"{r['regret_per_episode']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    ext = [r for r in results if r.get("extrapolation")]
    if ext:
        text += "\nExtrapolation (accuracy % at mean thinking tokens, by round):\n\n| model | dataset | " \
                + " | ".join(f"round {k}" for k in ext[0]["extrapolation"]["rounds"]) + " |\n|" \
                + "---|" * (2 + len(ext[0]["extrapolation"]["rounds"])) + "\n"
        for r in ext:
            e = r["extrapolation"]
            cells = [f"{_fmt(a)} @ {t:.0f}" for a, t in zip(e["accuracy"], e["tokens"])]
            text += f"| {r['model']} | {r['dataset']} | " + " | ".join(cells) + " |\n"
    eps = [r for r in results if r.get("episodes")]
    if eps:
        n = max(len(r["episodes"]["linearized_accuracy"]) for r in eps)
        text += ("\nAnswer forced after episode j (accuracy %; past a trace's last episode its own outcome), episodes "
                 "a trace, mean progress E_j - E_{j-1} of episode j (E_{-1} = 0):\n\n| model | dataset | episodes | "
                 + " | ".join(f"after ep {j}" for j in range(n)) + " | "
                 + " | ".join(f"progress ep {j}" for j in range(n)) + " |\n|" + "---|" * (3 + 2 * n) + "\n")
        for r in eps:
            e = r["episodes"]
            acc = e["linearized_accuracy"] + [e["linearized_accuracy"][-1]] * (n - len(e["linearized_accuracy"]))
            prog = [f"{p['mean']:+.3f} (n {p['n']})" for p in e["progress"]] + ["-"] * (n - len(e["progress"]))
            text += (f"| {r['model']} | {r['dataset']} | {e['episodes_per_trace']:.2f} | "
                     + " | ".join(_fmt(a) for a in acc) + " | " + " | ".join(prog) + " |\n")
    return text


def write_report(results: list[dict], out_dir: str | Path, config: dict | None = None) -> dict[str, Path]:
    """Write results.json and results.md under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps({"config": config, "results": results}, indent=2, default=str))
    paths["markdown"].write_text(markdown_table(results))
    return paths
