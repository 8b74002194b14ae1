"""Rewards by import path (mrt.reward_fn): loading by module or file, the row's columns reaching the function, shaping
terms in the training reward only, one-line errors naming the function and the row, and the example under
examples/chain_tolerance run for two steps."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from mrt.config import ConfigError, load_config
from mrt.data import PromptExample
from mrt.cli import run_cli
from mrt.reward_fn import CustomReward, RewardError, Shaping, reward_answers
from mrt.rewards import get_reward
from mrt.trainer import Trainer, main

from .real_models import ROOT

EXAMPLE = os.path.join(ROOT, "examples", "chain_tolerance")
EXAMPLE_CONFIG = os.path.join(EXAMPLE, "config.yaml")
EXAMPLE_REWARD = os.path.join(EXAMPLE, "reward.py")

USER_MODULE = '''
def exact(completion, answer, columns):
    return 1.0 if completion.strip().endswith(str(answer)) else 0.0

def with_columns(completion, answer, columns):
    return float(columns["weight"])

def boom(completion, answer, columns):
    raise KeyError("no such column")

def text(completion, answer, columns):
    return "yes"

def too_big(completion, answer, columns):
    return 1.5

def nan(completion, answer, columns):
    return float("nan")

def tensor(completion, answer, columns):
    import torch
    return torch.tensor(0.25)

def two_args(completion, answer):
    return 1.0

not_callable = 3
'''


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_MODULE)
    return str(path)


def _row(answer="7", row=12, **columns):
    return PromptExample([1, 2], "prompt", answer, "problem", row, columns)


def test_file_and_module_paths_load_and_get_the_columns(user_file, tmp_path, monkeypatch):
    r = get_reward(f"{user_file}:exact")
    assert isinstance(r, CustomReward)
    assert r("so it is 7", _row()) == 1.0 and r("so it is 8", _row()) == 0.0
    assert r("so it is 7", "7") == 1.0          # a bare answer (the built-in fn(text, answer) form) works too
    assert CustomReward(f"{user_file}:with_columns")("x", _row(weight=0.25)) == 0.25
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = CustomReward("my_rewards:with_columns")
    assert mod("x", _row(weight=0.75)) == 0.75
    assert CustomReward(f"{user_file}:tensor")("x", _row()) == 0.25     # a 0-d tensor is a number


@pytest.mark.parametrize("func, needles", [
    ("boom", ["reward: ", ":boom raised KeyError on row 12", "no such column"]),
    ("text", [":text returned str 'yes' on row 12", "must return a number"]),
    ("too_big", [":too_big returned 1.5 on row 12", "must return a number in [0, 1]"]),
    ("nan", [":nan returned nan on row 12", "in [0, 1]"]),
])
def test_a_misbehaving_function_names_itself_and_the_row(user_file, func, needles):
    r = CustomReward(f"{user_file}:{func}")
    with pytest.raises(RewardError) as err:
        r("completion", _row())
    msg = str(err.value)
    assert isinstance(err.value, ConfigError)          # a user error: one `error:` line, exit 2 (mrt.errors)
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("spec, needles", [
    ("no_such_pkg_xyz.rewards:score", ["reward: no_such_pkg_xyz.rewards:score: no module named 'no_such_pkg_xyz'"]),
    ("{dir}/missing.py:score", ["no such file", "missing.py"]),
    ("{file}:nope", ["has no function 'nope'", "exact"]),
    ("{file}:not_callable", ["not_callable is a int, not a function"]),
    ("{file}:two_args", ["must take three arguments (completion_text, answer, columns)"]),
    ("{file}:", ["is not MODULE:FUNCTION or PATH.py:FUNCTION"]),
])
def test_loading_errors_are_one_line(user_file, tmp_path, spec, needles):
    spec = spec.format(dir=tmp_path, file=user_file)
    with pytest.raises(RewardError) as err:
        get_reward(spec)
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_a_module_that_raises_on_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(RewardError, match=r"importing .*bad.py raised ModuleNotFoundError"):
        get_reward(f"{bad}:score")


def test_shaping_terms_are_weighted_and_unbounded(user_file):
    cfg = load_config(None, ["--shaping", f"[{{fn: '{user_file}:with_columns', weight: -2}}, "
                                         f"{{fn: '{user_file}:exact', weight: 0.5}}]"])
    s = Shaping(cfg.shaping)
    assert s.bonus("it is 7", _row(weight=3.0)) == pytest.approx(-6.0 + 0.5)
    with pytest.raises(RewardError, match=r"shaping\[0\]\.fn: .*:with_columns raised KeyError on row 12"):
        s.bonus("x", _row())
    assert not Shaping([])


def test_config_accepts_import_paths_and_keeps_the_unknown_name_error(tmp_path):
    cfg = load_config(None, ["--reward", "pkg.mod:score"])
    assert cfg.reward == "pkg.mod:score" and cfg.shaping == []
    with pytest.raises(ConfigError, match=r"reward: unknown reward 'mathh' \(known: \["):
        load_config(None, ["--reward", "mathh"])
    with pytest.raises(ConfigError, match=r"shaping\.fn: must be MODULE:FUNCTION"):
        load_config(None, ["--shaping", "[{fn: nocolon}]"])
    cfg = load_config(EXAMPLE_CONFIG)          # the resolved config reads back to an equal one
    cfg.save(str(tmp_path / "c.yaml"))
    assert load_config(str(tmp_path / "c.yaml")) == cfg
    assert cfg.shaping[0].weight == 0.2 and cfg.shaping[0].fn.endswith("reward.py:brevity")


def test_reward_answers_keep_the_builtin_form():
    rows = [_row("3"), _row("4")]
    assert reward_answers(get_reward("arithmetic"), rows) == ["3", "4"]


def test_rows_carry_their_other_columns(tmp_path):
    from mrt.data import load_prompts

    from .conftest import TINY_MODEL
    from mrt.hub import load_checked_tokenizer
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"problem": f"{i} + 1", "answer": i + 1, "tolerance": i, "tags": ["a"]})
                              for i in range(3)))
    cfg = load_config(None, ["--data.path", str(path), "--data.format", "jsonl"]).data
    tok = load_checked_tokenizer(TINY_MODEL, 481, key="model.path")
    ds = load_prompts(cfg, tok)
    assert [e.columns for e in ds.examples] == [{"tolerance": i, "tags": ["a"]} for i in range(3)]


def _example_config(out_dir, *extra):
    return load_config(EXAMPLE_CONFIG, [
        "--reward", f"{EXAMPLE_REWARD}:score",
        "--shaping", f"[{{fn: '{EXAMPLE_REWARD}:brevity', weight: 0.2}}]",
        "--optim.steps", "2", "--optim.prompts_per_step", "4", "--rollout.group_size", "4", "--eval.held_out", "4",
        "--eval.samples", "1", "--logging.out_dir", str(out_dir), "--logging.progress_bar", "false",
        "--logging.plots", "false", *extra])


def test_outcome_decides_correct_and_shaping_only_the_training_reward(tmp_path):
    """Every trace's `correct` is score() of its text, its reward score() + 0.2 brevity(); J is scored by score()."""
    sys.path.insert(0, EXAMPLE)
    try:
        import reward as example_reward
    finally:
        sys.path.remove(EXAMPLE)
    trainer = Trainer(_example_config(tmp_path, "--rl.dynamic_sampling", "false"))
    seen, branch_texts = [], []
    outcome, shaping = trainer.reward_fn, trainer.shaping

    def spy_bonus(text, example):
        seen.append((text, example))
        return shaping.__class__.bonus(shaping, text, example)

    user_score = outcome.fn

    def spy_outcome(text, answer, columns):
        if text.startswith(trainer.cfg.meta_prover.termination_text):
            branch_texts.append(text)
        return user_score(text, answer, columns)

    shaping.bonus = spy_bonus
    outcome.fn = spy_outcome
    batch, _ = trainer.rollout(0)
    assert len(seen) == len(batch) == 16
    want_correct = [example_reward.score(t, e.answer, e.columns) for t, e in seen]
    want_reward = [c + 0.2 * example_reward.brevity(t, e.answer, e.columns) for c, (t, e) in zip(want_correct, seen)]
    assert batch.correct.tolist() == pytest.approx(want_correct)
    assert batch.rewards.tolist() == pytest.approx(want_reward, abs=1e-6)
    assert any(w < c for w, c in zip(want_reward, want_correct))      # the shaping term did bite somewhere
    assert branch_texts, "the meta-prover's forced answers were not scored by the user's reward"


def test_example_trains_two_steps(tmp_path):
    result = Trainer(_example_config(tmp_path)).train()
    train = [r for r in result["records"] if r["kind"] == "train"]
    assert result["step"] == 2 and len(train) == 2
    for r in train:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["reward"] <= r["accuracy"] + 1e-9   # brevity only subtracts
    assert 0.0 <= result["after"]["eval/accuracy"] <= 1.0
    assert (tmp_path / "metrics.jsonl").exists()


def test_cli_errors_exit_2_naming_function_and_row(tmp_path, capsys):
    bad = tmp_path / "r.py"
    bad.write_text(textwrap.dedent('''
        def half(completion, answer, columns):
            return 2.0 if columns["tolerance"] == 2 else 0.0
    '''))
    base = ["--config", EXAMPLE_CONFIG, "--optim.steps", "1", "--logging.progress_bar", "false",
            "--logging.plots", "false", "--logging.out_dir", str(tmp_path / "run"), "--eval.held_out", "4"]
    assert run_cli(main, base + ["--reward", f"{bad}:missing", "--check"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and "has no function 'missing'" in err[0], err
    assert run_cli(main, base + ["--reward", f"{bad}:half"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"error: reward: {bad}:half returned 2.0 on row " in lines[0], lines[0]
    assert "must return a number in [0, 1]" in lines[0]



def test_a_module_missing_a_dependency_is_not_itself_missing(tmp_path, monkeypatch):
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_abc\n\ndef score(c, a, cols):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardError, match=r"importing needs_dep raised ModuleNotFoundError: No module named "
                                          r"'no_such_dependency_abc'"):
        get_reward("needs_dep:score")
