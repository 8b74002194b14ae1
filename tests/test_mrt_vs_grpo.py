"""benchmarks/mrt_vs_grpo.py: the task's budgets, the comparison's numbers over seeds on fabricated eval results
(worked out by hand here), and a tiny end-to-end run on the arithmetic task (slow: it trains five runs)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mrt_vs_grpo_bench", ROOT / "benchmarks" / "mrt_vs_grpo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_task_budgets_two_past_training_within_the_context(bench):
    # T = 80 in a 512-token context: T/2, T, 2T, 4T all fit.
    assert bench.task_budgets(80, 470) == ([40, 80, 160, 320], [])
    # T = 96 in a 256-token context (prompt, termination, answer leave 227): 4T does not fit, the largest that does
    # replaces it, and the note says so.
    budgets, notes = bench.task_budgets(96, 227)
    assert budgets == [48, 96, 192, 227] and "[384]" in notes[0]
    # Nothing past training fits: said.
    budgets, notes = bench.task_budgets(96, 96)
    assert budgets == [48, 96] and any("0 budget(s) past" in n for n in notes)


def test_task_presets_resolve_for_arithmetic(bench):
    path, cfg = bench.task_preset(bench.TASKS["arithmetic"])
    assert path.exists() and "arithmetic" in (cfg.get("reward"), cfg["data"]["path"])
    assert int(cfg["rollout"]["max_new_tokens"]) > 0


def _result(model: str, acc: list[float], pass1: float, outcomes: list[list[float]]) -> dict:
    """A fabricated mrt.eval result: accuracy on the grid 24, 48, 96, 192 (T = 96), and episode outcomes."""
    from mrt.eval.episode_forcing import linearized_accuracy
    grid = [24, 48, 96, 192]
    return {"model": model, "pass@1": pass1, "maj@k": [pass1, pass1], "pass@k": [pass1, min(1.0, pass1 + 0.1)],
            "budgets": grid, "accuracy_at_budget": acc, "normalised_regret_at_budget": [1 - a for a in acc],
            "mean_tokens": 50.0, "curve": {"output_tokens": grid, "J": acc},
            "episodes": {"episodes_per_trace": sum(map(len, outcomes)) / len(outcomes),
                         "linearized_accuracy": linearized_accuracy(outcomes), "outcomes": outcomes}}


def _per_seed():
    return {
        0: [_result("base", [0.1, 0.2, 0.3, 0.3], 0.30, [[0.0], [1.0, 0.0]]),
            _result("grpo", [0.1, 0.3, 0.5, 0.5], 0.40, [[1.0], [0.0, 0.0]]),
            _result("mrt-dense", [0.2, 0.6, 0.7, 0.7], 0.50, [[1.0], [0.0, 1.0, 1.0]])],
        1: [_result("base", [0.1, 0.2, 0.3, 0.3], 0.30, [[0.0]]),
            _result("grpo", [0.1, 0.4, 0.6, 0.6], 0.50, [[1.0]]),
            _result("mrt-dense", [0.1, 0.3, 0.4, 0.5], 0.45, [[0.0, 1.0]])],
    }


def test_token_efficiency_and_gain_ratio_per_seed(bench):
    per_seed = _per_seed()
    eff = bench.efficiency_of(per_seed, 96)
    # Seed 0: GRPO's acc@96 is 0.5, reached at 96; MRT reaches it at 24 + 0.75 * 24 = 42: 96 / 42.
    # Seed 1: GRPO's 0.6 at 96; MRT reaches it only past 192: not reached.
    assert eff["grpo"]["target"] == pytest.approx([0.5, 0.6])
    assert eff["mrt-dense"]["budget"][0] == pytest.approx(42.0) and math.isnan(eff["mrt-dense"]["budget"][1])
    assert eff["mrt-dense"]["ratio"][0] == pytest.approx(96 / 42) and math.isnan(eff["mrt-dense"]["ratio"][1])
    assert "1 of 2 seeds" in bench.efficiency_table(eff)
    gains = bench.gain_ratios(per_seed, ["pass@1", "acc@96"])
    # pass@1: seed 0 (0.5 - 0.3) / (0.4 - 0.3) = 2, seed 1 (0.45 - 0.3) / (0.5 - 0.3) = 0.75; of the seed means
    # (0.475 - 0.3) / (0.45 - 0.3) = 7 / 6.
    assert gains["mrt-dense"]["pass@1"]["per_seed"] == pytest.approx([2.0, 0.75])
    assert gains["mrt-dense"]["pass@1"]["of_means"] == pytest.approx(7 / 6)
    assert set(gains) == {"mrt-dense"}


def test_linearized_view_and_progress_pooled_over_seeds(bench):
    per_seed = _per_seed()
    assert bench.num_linearized(per_seed) == 3
    rows = {r["model"]: r for r in bench.summarize(per_seed)}
    # MRT: seed 0 traces [1] and [0, 1, 1]: after ep 0 = 0.5, ep 1 = 1, ep 2 = 1; seed 1 [0, 1]: 0, 1, 1.
    assert rows["mrt-dense"]["after_ep0_values"] == pytest.approx([0.5, 0.0])
    assert rows["mrt-dense"]["after_ep2_values"] == pytest.approx([1.0, 1.0])
    paired = {r["model"]: r for r in bench.paired_vs(per_seed, "grpo")}
    # pass@1 minus GRPO: +0.1 and -0.05.
    assert paired["mrt-dense - grpo"]["pass@1_mean"] == pytest.approx(0.025)
    prog = bench.pooled_progress(per_seed)
    # MRT pooled: episode 0 progress 1, 0, 0 (three traces), episode 1: +1 (two traces), episode 2: 0.
    assert [p["n"] for p in prog["mrt-dense"]] == [3, 2, 1]
    assert prog["mrt-dense"][1]["mean"] == pytest.approx(1.0)
    assert "| mrt-dense | 1 | 2 | 1.000 |" in bench.progress_table(prog)


def test_plot_accuracy_vs_tokens(bench, tmp_path):
    path = bench.plot_tokens(_per_seed(), 96, tmp_path / "acc.png", "test")
    assert path.exists() and path.stat().st_size > 1000


def _prepared_runs(bench, task: str, runs_dir: Path, names: list[str]) -> None:
    """Run folders as train.py leaves them (config.yaml, metrics.jsonl, a checkpoint), the checkpoint being the base
    model itself: what --skip-train reads. Skips when the task has no preset or no model yet."""
    import shutil
    try:
        _, preset = bench.task_preset(bench.TASKS[task])
        base = bench.resolve_base(preset)
    except (SystemExit, Exception) as exc:   # noqa: BLE001
        pytest.skip(f"task {task} not shipped: {exc}")
    for name in names:
        run = runs_dir / "seed_0" / name
        shutil.copytree(base, run / "checkpoints" / "step_2")
        (run / "config.yaml").write_text("optim: {prompts_per_step: 2}\nrollout: {group_size: 2}\n")
        (run / "metrics.jsonl").write_text("\n".join(json.dumps({"kind": "train", "step": s, "prompts_generated": 2,
                                                                  "generated_tokens": 100, "time/step": 1.0})
                                                      for s in (1, 2)) + "\n")


@pytest.mark.parametrize("task,vote", [("arithmetic", "the extracted final value"),
                                       ("countdown", "the expression as written")])
def test_skip_train_evaluates_and_reports_every_measurement(bench, tmp_path, monkeypatch, capsys, task, vote):
    # The whole evaluation and report on the task's shipped model, training skipped (the slow test below trains).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _prepared_runs(bench, task, tmp_path / "runs", ["grpo", "mrt-dense"])
    out = tmp_path / "out.json"
    payload = bench.main(["--task", task, "--seeds", "1", "--problems", "3", "--samples", "2", "--runs",
                          "grpo,mrt-dense", "--skip-train", "--curve-every", "16", "--runs-dir",
                          str(tmp_path / "runs"), "--out", str(out)])
    printed = capsys.readouterr().out
    for what in (f"maj@2 votes on {vote}", "normalised regret at each budget",
                 "answer forced after episode j", "token efficiency", "gain ratio", "per-episode progress"):
        assert what in printed, what
    saved = json.loads(out.read_text())
    T = saved["train_budget"]
    assert len(saved["budgets"]) >= 4 and sum(b > T for b in saved["budgets"]) >= 2
    for key in ("summary", "paired_vs_grpo", "token_efficiency", "gain_ratio", "episodes", "progress_distribution",
                "sample_budget", "results"):
        assert key in saved, key
    assert saved["sample_budget"]["grpo"]["0"]["samples"] == 2 * 2 * 2
    # Three copies of one model with one seed and one set of draws: every number equal, every paired difference 0.
    rows = {r["model"]: r for r in payload["summary"]}
    assert rows["grpo"]["pass@1_mean"] == rows["base"]["pass@1_mean"] == rows["mrt-dense"]["pass@1_mean"]
    assert all(r[k] == 0 for r in payload["paired_vs_grpo"] for k in r if k.endswith("_mean"))
    assert saved["token_efficiency"]["mrt-dense"]["ratio"] == [1.0]   # reaches GRPO's accuracy where GRPO does
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").exists()
    assert (tmp_path / "out" / "seed_0" / "results.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MRT_BENCH_SMOKE") != "1",
                    reason="trains five runs (about 2 min on 2 cores): MRT_BENCH_SMOKE=1 runs it")
def test_smoke_run_on_arithmetic(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    small = ["--eval.held_out", "4", "--eval.samples", "1", "--eval.every", "0", "--optim.prompts_per_step", "2",
             "--rollout.group_size", "2", "--checkpoint.every", "2", "--rl.dynamic_sampling", "false"]
    out = tmp_path / "out.json"
    payload = bench.main(["--seeds", "1", "--steps", "2", "--problems", "8", "--samples", "2",
                          "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
                         + [f"--train-arg={a}" for a in small])
    saved = json.loads(out.read_text())
    for key in ("summary", "paired_vs_grpo", "token_efficiency", "gain_ratio", "episodes", "progress_distribution",
                "sample_budget", "results"):
        assert key in saved, key
    assert len(saved["budgets"]) >= 4 and sum(b > saved["train_budget"] for b in saved["budgets"]) >= 2
    assert {r["model"] for r in payload["summary"]} == {"base", *bench.DEFAULT_RUNS}
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").exists()
    assert len({b["samples"] for per in saved["sample_budget"].values() for b in per.values()}) == 1
    assert os.path.exists(tmp_path / "out" / "seed_0" / "results.json")
