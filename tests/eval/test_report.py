"""results.json, the Markdown table and the plots from hand-made results of two models."""
import json

from mrt.eval.plots import plot_results
from mrt.eval.report import markdown_table, write_report


def _result(model, acc, extrapolation=True):
    r = {"model": model, "dataset": "arith", "budgets": [64, 128], "pass@1": acc, "maj@k": [acc, acc + 0.1],
         "tokens_for_maj@k": [50.0, 100.0], "mean_tokens": 50.0, "accuracy_at_budget": [acc - 0.2, acc],
         "normalised_regret_at_budget": [0.9, 0.55], "regret_per_episode": 0.4,
         "curve": {"tokens": [40, 80, 120], "J": [0.1, 0.3, acc]}}
    if extrapolation:
        r["extrapolation"] = {"rounds": [0, 1], "tokens": [50.0, 90.0], "accuracy": [acc, acc + 0.05],
                              "stopped": [1.0, 1.0]}
    return r


def test_table_and_files(tmp_path):
    results = [_result("base", 0.5), _result("mrt", 0.75)]
    table = markdown_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| model | dataset | pass@1 | maj@2 | tokens | acc@64 | acc@128 | regret@64 |")
    assert "| base | arith | 50.0 | 60.0 | 50 | 30.0 | 50.0 | 0.900 | 0.550 | 0.400 |" in lines, table
    assert "| mrt | arith | 75.0 | 85.0 |" in table
    assert "| mrt | arith | 75.0 @ 50 | 80.0 @ 90 |" in table, table
    paths = write_report(results, tmp_path / "out", {"samples": 2})
    saved = json.loads(paths["json"].read_text())
    assert saved["config"] == {"samples": 2} and saved["results"][1]["pass@1"] == 0.75
    assert paths["markdown"].read_text() == table
    pngs = plot_results(results + [_result("grpo", 0.6, extrapolation=False)], tmp_path / "out")
    assert [p.name for p in pngs] == ["arith.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 10_000


def test_j_panel_draws_grid_curves_in_token_order(tmp_path, monkeypatch):
    """With curve_grid: one line rising in x per model plus its band; without: the mean points, not joined."""
    import matplotlib.pyplot as plt

    from mrt.eval.stats import curve_band
    with_grid = _result("mrt", 0.75, extrapolation=False)
    with_grid["curve_grid"] = curve_band([[([40, 120, 80], [0.1, 0.75, 0.3])], [([50, 90], [0.0, 1.0])]])
    old = _result("base", 0.5, extrapolation=False)
    old["curve"] = {"tokens": [40, 90, 80], "J": [0.1, 0.5, 0.4]}    # mean points out of token order
    saved = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))
    plot_results([old, with_grid], tmp_path)
    monkeypatch.setattr(plt, "close", real_close)
    ax = saved[0].axes[3]
    assert ax.get_title().startswith("meta-prover J")
    base_line, mrt_line = ax.get_lines()
    assert base_line.get_linestyle() == "None" and base_line.get_marker() == "o"
    x = list(mrt_line.get_xdata())
    assert x == sorted(x) and len(x) == 48 and list(mrt_line.get_ydata()) == with_grid["curve_grid"]["J"]
    assert len(ax.collections) == 1          # one band, for the model with a grid
    real_close(saved[0])
