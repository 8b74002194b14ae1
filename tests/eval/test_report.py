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
