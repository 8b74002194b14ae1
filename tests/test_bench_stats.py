"""The comparison benchmarks' statistics against hand-computed values: per-seed summaries with t-intervals, the
paired differences, the sample budget read back from a run folder, the reward fifths and the lr check."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: Python 3.12's dataclasses look the module up in sys.modules
    # (string annotations), and find None otherwise.
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


mvg = _load("mrt_vs_grpo")
lvt = _load("learning_vs_trl")


def _res(model, p1, acc32, reg32, tokens):
    return {"model": model, "pass@1": p1, "maj@k": [p1, p1 + 0.1], "budgets": [32], "accuracy_at_budget": [acc32],
            "normalised_regret_at_budget": [reg32], "mean_tokens": tokens}


def test_summary_and_paired_intervals():
    per_seed = {0: [_res("grpo", 0.2, 0.1, 0.9, 50.0), _res("mrt", 0.3, 0.2, 0.8, 40.0)],
                1: [_res("grpo", 0.4, 0.1, 0.7, 60.0), _res("mrt", 0.4, 0.3, 0.6, 50.0)]}
    rows = {r["model"]: r for r in mvg.summarize(per_seed)}
    # grpo pass@1 over seeds: 0.2, 0.4 -> mean 0.3, s = 0.141421, half = 12.706 * s / sqrt(2) = 1.2706.
    g = rows["grpo"]
    assert g["seeds"] == 2 and g["pass@1_mean"] == pytest.approx(0.3) and g["pass@1_ci95"] == pytest.approx(1.2706)
    assert g["pass@1_values"] == [0.2, 0.4] and g["maj@2_mean"] == pytest.approx(0.4)
    assert g["acc@32_ci95"] == pytest.approx(0.0) and g["tokens_mean"] == 55.0
    # mrt - grpo by seed: pass@1 0.1, 0.0 -> mean 0.05, half 12.706 * 0.0707107 / sqrt(2) = 0.6353;
    # regret: -0.1, -0.1 -> mean -0.1, no spread.
    (d,) = mvg.paired_vs(per_seed, "grpo")
    assert d["model"] == "mrt - grpo"
    assert d["pass@1_mean"] == pytest.approx(0.05) and d["pass@1_ci95"] == pytest.approx(0.6353)
    assert d["regret@32_mean"] == pytest.approx(-0.1) and d["regret@32_ci95"] == pytest.approx(0.0, abs=1e-12)
    table = mvg.table(list(rows.values()))
    assert "| grpo | 30.0 ± 127.1 | 40.0 ± 127.1 | 10.0 ± 0.0 | 80.0 ± 127.1 | 55 ± 64 |" in table, table


def test_single_seed_has_no_interval():
    rows = mvg.summarize({0: [_res("grpo", 0.2, 0.1, 0.9, 50.0)]})
    assert math.isnan(rows[0]["pass@1_ci95"]) and "| grpo | 20.0 | 30.0 | 10.0 | 90.0 | 50 |" in mvg.table(rows)


def test_sample_budget_from_run_folder(tmp_path):
    (tmp_path / "config.yaml").write_text("optim:\n  prompts_per_step: 4\nrollout:\n  group_size: 2\n")
    recs = [{"kind": "eval", "step": 0}, {"kind": "train", "step": 1, "generated_tokens": 100, "time/step": 1.5},
            {"kind": "train", "step": 2, "generated_tokens": 50, "time/step": 0.5, "prompts_generated": 6}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    b = mvg.sample_budget(tmp_path)
    # step 1: 4 x 2 = 8 traces (no count logged); step 2: its 6 prompts generated (over-sampling) x 2 = 12.
    assert b == {"steps": 2, "prompts_per_step": 4, "group_size": 2, "samples": 20, "generated_tokens": 150,
                 "train_loop_seconds": 2.0}


def test_fifths_and_lr_check():
    assert lvt.fifths([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == (1.5, 9.5)
    assert lvt.fifths([0.2, None, 0.4]) == (0.2, 0.4)
    from mrt.config import load_config
    cfg = load_config(None, ["--optim.warmup_ratio", "0.5", "--optim.lr", "1.0"])
    # 4 steps, warmup round(0.5 * 4) = 2: (s + 1) / 3 for s < 2, then cosine over the 2 left: 1, 0.5.
    assert lvt.lr_matched(cfg, 4, [1 / 3, 2 / 3, 1.0, 0.5])
    assert not lvt.lr_matched(cfg, 4, [0.0, 0.5, 1.0, 0.5])       # transformers' own warmup starts at 0
    assert not lvt.lr_matched(cfg, 4, [1 / 3, 2 / 3, 1.0])


def test_learning_vs_trl_over_seeds():
    # Seed 0: base 0.2, ours 0.3 (10 s), TRL 0.25 (20 s); seed 1: base 0.1, ours 0.3 (12 s), TRL 0.15 (30 s).
    per_seed = [{"seed": 0, "base": 0.2, "rows": [{"name": "ours", "pass@1": 0.3, "train_seconds": 10.0},
                                                  {"name": "trl", "pass@1": 0.25, "train_seconds": 20.0}]},
                {"seed": 1, "base": 0.1, "rows": [{"name": "ours", "pass@1": 0.3, "train_seconds": 12.0},
                                                  {"name": "trl", "pass@1": 0.15, "train_seconds": 30.0}]}]
    ours, trl, paired = lvt.over_seeds(per_seed)
    assert ours["pass@1_mean"] == pytest.approx(0.3) and ours["pass@1_ci95"] == pytest.approx(0.0, abs=1e-12)
    # gains 0.1, 0.2 -> mean 0.15, half 12.706 * 0.0707107 / sqrt(2) = 0.6353
    assert ours["gain_mean"] == pytest.approx(0.15) and ours["gain_ci95"] == pytest.approx(0.6353)
    assert trl["train_seconds_mean"] == 25.0
    # ours - TRL: 0.05, 0.15 -> 0.1; time ratios 0.5, 0.4 -> 0.45, half 12.706 * 0.0707107 / sqrt(2) = 0.6353
    assert paired["pass@1_mean"] == pytest.approx(0.1) and paired["time_ratio_mean"] == pytest.approx(0.45)
    assert paired["time_ratio_ci95"] == pytest.approx(0.6353)


def test_claim_verdicts():
    assert mvg.verdict(-0.05, 0.02, lower_is_better=True) == "better"
    assert mvg.verdict(-0.05, 0.02, lower_is_better=False) == "worse"
    assert mvg.verdict(0.01, 0.02, lower_is_better=True) == "no clear difference"
    assert mvg.verdict(0.01, float("nan"), lower_is_better=True) == "no clear difference"
    row = {"model": "mrt-sum - grpo", "pass@1_mean": -0.01, "pass@1_ci95": 0.03,
           "regret@32_mean": -0.04, "regret@32_ci95": 0.01, "regret@96_mean": 0.02, "regret@96_ci95": 0.01,
           "acc@32_mean": 0.03, "acc@32_ci95": 0.01, "acc@96_mean": 0.0, "acc@96_ci95": 0.01}
    assert mvg.claim_lines([row, {**row, "model": "base - grpo"}], [32, 96]) == [
        "  mrt-sum vs grpo: regret@32 better, regret@96 worse, acc@32 better, pass@1 no clear difference"]
