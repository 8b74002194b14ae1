"""The paper presets against docs/algorithm.md: J_-1 estimated, one termination text per family shared with evaluation."""
import os

import pytest

from mrt.config import load_config
from mrt.eval.config import EvalConfig, parse_args
from mrt.eval.problems import load_dataset
from mrt.termination import TERMINATION_TEXTS

from .conftest import ROOT

PAPER = ["r1_distill_qwen_1p5b_mrt", "r1_distill_qwen_1p5b_grpo", "deepscaler_1p5b_mrt", "deepscaler_1p5b_grpo"]


def _preset(name):
    return load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))


@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_follows_mrt_md(name):
    cfg = _preset(name)
    assert cfg.rollout.max_new_tokens == 24576 and cfg.eval.max_new_tokens == 16384
    assert cfg.meta_prover.termination_text == TERMINATION_TEXTS["r1"]
    assert cfg.rl.recompute_old_logp is True and cfg.model.dtype == "bfloat16"
    if cfg.rl.algo == "mrt":
        assert cfg.meta_prover.prompt_branches is True


def test_training_and_eval_share_the_r1_text(tmp_path):
    data = tmp_path / "math.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    ds = load_dataset(str(data))
    assert ds.termination_text == _preset("r1_distill_qwen_1p5b_mrt").meta_prover.termination_text
    # A name on the eval command line resolves to the same text; any other string is taken literally.
    cfg = parse_args(["--model", str(tmp_path), "--data", str(data), "--termination-text", "r1"])
    assert cfg.termination_text == TERMINATION_TEXTS["r1"]
    assert EvalConfig(termination_text="\\boxed{").termination_text == "\\boxed{"
    override = load_config(None, ["--meta_prover.termination_text", "arithmetic"])
    assert override.meta_prover.termination_text == TERMINATION_TEXTS["arithmetic"]


def test_eval_has_no_unused_extrapolation_samples(tmp_path):
    with pytest.raises(ValueError, match="unknown settings"):
        cfg = tmp_path / "e.yaml"
        cfg.write_text("extrapolation_samples: 2\nmodel: x\ndata: y\n")
        parse_args(["--config", str(cfg)])
