"""Bad inputs of `python -m mrt.eval` are clear errors, raised before any model is loaded."""
import json

import pytest

from mrt.eval import __main__ as cli
from mrt.eval.config import EvalConfig, parse_args
from mrt.eval.run import run


def _model_dir(tmp_path, context=64):
    """A folder with only a config.json: the budget check must fire before weights are looked for."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": context}))
    return d


def _data(tmp_path, rows):
    f = tmp_path / "data.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_unknown_column_names_the_columns(tmp_path, capsys):
    data = _data(tmp_path, [{"question": "1+1", "answer": "2"}])
    rc = cli.main(["--model", str(_model_dir(tmp_path)), "--data", str(data), "--budgets", "8"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no prompt column 'problem'" in err and "['answer', 'question']" in err, err
    data2 = _data(tmp_path, [{"problem": "1+1", "solution": "2"}])
    with pytest.raises(ValueError, match="no answer column 'answer'"):
        run(parse_args(["--model", str(tmp_path / "model"), "--data", str(data2), "--budgets", "8"]))


def test_empty_dataset(tmp_path, capsys):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    assert cli.main(["--model", str(_model_dir(tmp_path)), "--data", str(f), "--budgets", "8"]) == 2
    assert "is empty" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is empty"):
        run(parse_args(["--model", "m", "--data", "arithmetic:0"]))


def test_budget_larger_than_context(tmp_path, capsys):
    data = _data(tmp_path, [{"problem": "1+1", "answer": "2"}])
    assert cli.main(["--model", str(_model_dir(tmp_path, context=64)), "--data", str(data), "--budgets", "16,64"]) == 2
    err = capsys.readouterr().err
    assert "budget 64 is larger than model model's context of 64" in err, err


def test_missing_inputs_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="no model"):
        parse_args(["--data", "x.jsonl"])
    with pytest.raises(ValueError, match="no dataset"):
        parse_args(["--model", "m"])
    with pytest.raises(ValueError, match="comma-separated list of integers"):
        parse_args(["--model", "m", "--data", "d", "--budgets", "4096,lots"])
    with pytest.raises(ValueError, match="positive"):
        parse_args(["--model", "m", "--data", "d", "--budgets", "0,5"])
    with pytest.raises(ValueError, match="samples must be >= 1"):
        parse_args(["--model", "m", "--data", "d", "--samples", "0"])
    with pytest.raises(ValueError, match="distinct"):
        parse_args(["--model", "a=x", "--model", "a=y", "--data", "d"])
    with pytest.raises(ValueError, match="no such file or folder"):
        run(parse_args(["--model", "m", "--data", str(tmp_path / "nope.jsonl")]))


def test_config_file_and_overrides(tmp_path):
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("model: base=/a\ndata: [d1.jsonl, d2.jsonl]\nbudgets: [300, 100]\nsamples: 3\n"
                        "termination-text: \"\\n\\nanswer: \"\n")
    cfg = parse_args(["--config", str(cfg_file), "--samples", "5", "--no-chat-template"])
    assert cfg.named_models() == [("base", "/a")]
    assert cfg.data == ["d1.jsonl", "d2.jsonl"]
    assert cfg.budgets == [100, 300] and cfg.samples == 5 and cfg.chat_template is False
    assert cfg.termination_text == "\n\nanswer: "
    (tmp_path / "bad.yaml").write_text("modle: x\n")
    with pytest.raises(ValueError, match="unknown settings \\['modle'\\]"):
        parse_args(["--config", str(tmp_path / "bad.yaml")])
    assert EvalConfig(models=["m"], data=["d"]).max_budget == 16384


def test_every_flag_has_a_help_line():
    """`python -m mrt.eval --help`: each flag of the evaluate: section says what it does (not a bare name)."""
    from mrt.eval.config import _parser
    actions = [a for a in _parser()._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= 30
    bare = [a.option_strings[0] for a in actions if not a.help or len(a.help.split()) < 3]
    assert not bare, bare
    assert {"--model", "--data", "--round-tokens", "--no-chat-template", "--check"} <= \
        {s for a in actions for s in a.option_strings}


def test_settings_are_the_config_trees_evaluate_section(tmp_path):
    """One config tree: the evaluation's settings are Config.evaluate; a whole tree's file is read for that section
    and the resolved config round-trips through YAML."""
    from mrt.config import Config, config_from_dict
    assert isinstance(Config().evaluate, EvalConfig)
    tree = config_from_dict({"evaluate": {"models": ["m"], "data": ["d"], "budgets": [64, 32]}})
    assert tree.evaluate.budgets == [32, 64]
    assert config_from_dict(tree.to_dict()) == tree
    f = tmp_path / "run.yaml"
    f.write_text("rl:\n  alpha: 0.5\nevaluate:\n  models: [base=/a]\n  data: [countdown:8]\n  samples: 3\n")
    cfg = parse_args(["--config", str(f), "--round-tokens", "64"])
    assert cfg.named_models() == [("base", "/a")] and cfg.samples == 3 and cfg.round_tokens == 64


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only user errors become one `error:` line with exit code 2; a ValueError from inside the code propagates."""
    def broken(cfg):
        raise ValueError("a bug")
    monkeypatch.setattr(cli, "run", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["--model", "m", "--data", "d"])
    assert cli.main(["--model", "m", "--data", "d", "--samples", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: samples must be >= 1")


def test_a_tokenizer_without_chat_template_needs_the_flag(tmp_path, tiny_model_dir, capsys):
    """No silent fall back to raw text: the chat template is on by default and its absence is a user error."""
    data = _data(tmp_path, [{"problem": "1+1", "answer": "2"}])
    argv = ["--model", str(tiny_model_dir), "--data", str(data), "--budgets", "8", "--check"]
    assert cli.main(argv) == 2
    assert "no chat template; pass --no-chat-template" in capsys.readouterr().err
    assert cli.main(argv + ["--no-chat-template"]) == 0
