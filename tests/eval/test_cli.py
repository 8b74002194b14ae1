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
