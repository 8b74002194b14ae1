import glob
import os

import pytest
import yaml

from mrt.config import Config, ConfigError, load_config, parse_overrides

from .conftest import ROOT

PRESETS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_presets_exist():
    names = {os.path.basename(p) for p in PRESETS}
    assert {"tiny_mrt.yaml", "r1_distill_qwen_1p5b_mrt.yaml", "r1_distill_qwen_1p5b_grpo.yaml",
            "deepscaler_1p5b_mrt.yaml", "deepscaler_1p5b_grpo.yaml"} <= names


def test_tiny_preset_is_the_default():
    assert load_config(os.path.join(ROOT, "configs", "tiny_mrt.yaml")) == Config() == load_config(None)


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_every_preset_loads_with_stand_ins(path, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    cfg = load_config(path, ["--model.path", str(tmp_path), "--data.path", str(data), "--optim.steps=2"])
    assert cfg.model.path == str(tmp_path) and cfg.data.path == str(data) and cfg.optim.steps == 2
    # Round trip through the saved resolved config.
    cfg.save(str(tmp_path / "resolved.yaml"))
    assert load_config(str(tmp_path / "resolved.yaml")) == cfg


def test_paper_settings():
    for name in ("r1_distill_qwen_1p5b", "deepscaler_1p5b"):
        mrt = load_config(os.path.join(ROOT, "configs", f"{name}_mrt.yaml"))
        grpo = load_config(os.path.join(ROOT, "configs", f"{name}_grpo.yaml"))
        for c in (mrt, grpo):
            assert c.optim.lr == 1e-6 and c.optim.schedule == "cosine" and c.optim.warmup_ratio == 0.1
            assert c.optim.weight_decay == 0.01 and c.optim.prompts_per_step == 256 and c.rollout.group_size == 4
            assert c.data.max_prompt_tokens == 4096 and c.rollout.temperature == 0.9 and c.model.dtype == "bfloat16"
            assert c.meta_prover.temperature == 0.6 and c.meta_prover.top_p == 0.95 and c.meta_prover.m == 8
            assert c.episodes.min_paragraphs == 3 and "But hold on" in c.episodes.markers
            assert c.meta_prover.termination_text.startswith("Time is up.\n\nGiven the time I've spent")
        assert mrt.rl.algo == "mrt" and grpo.rl.algo == "grpo"


def test_override_forms():
    cfg = load_config(None, ["--rl.alpha", "0.5", "--optim.lr=3e-5", "--checkpoint.resume", "--rl.alpha", "-0.0",
                             "--episodes.markers", "[Wait, But wait]", "--rollout.top_k", "null",
                             "--optim.betas", "0.9,0.95", "--meta_prover.enabled", "false", "--rl.algo", "grpo",
                             "--optim.steps", "7", "--model.dtype", "bfloat16"])
    assert cfg.rl.alpha == 0.0 and cfg.optim.lr == 3e-5 and cfg.checkpoint.resume is True
    assert cfg.episodes.markers == ["Wait", "But wait"] and cfg.rollout.top_k is None
    assert cfg.optim.betas == [0.9, 0.95] and cfg.meta_prover.enabled is False and cfg.optim.steps == 7
    assert isinstance(cfg.optim.steps, int) and isinstance(cfg.rl.alpha, float)
    assert parse_overrides(["--a.b", "1", "--c=2", "--flag"]) == [("a.b", "1"), ("c", "2"), ("flag", None)]


@pytest.mark.parametrize("overrides, key", [
    (["--rl.alphaa", "1"], "rl.alphaa"),
    (["--nosuch.x", "1"], "nosuch"),
    (["--rl.alpha", "abc"], "rl.alpha"),
    (["--rl.alpha", "-1"], "rl.alpha"),
    (["--rl.algo", "ppo"], "rl.algo"),
    (["--rl.advantage_mode", "dens"], "rl.advantage_mode"),
    (["--rl.aggregation", "constant"], "rl.constant_normalizer"),
    (["--optim.steps", "1.5"], "optim.steps"),
    (["--optim.steps", "0"], "optim.steps"),
    (["--optim.betas", "[0.9]"], "optim.betas"),
    (["--rollout.top_p", "0"], "rollout.top_p"),
    (["--rollout.group_size", "true"], "rollout.group_size"),
    (["--checkpoint.resume", "maybe"], "checkpoint.resume"),
    (["--optim.lr"], "optim.lr"),
    (["--rl", "1"], "rl"),
    (["--rl.alpha.x", "1"], "rl.alpha"),
    (["--episodes.segmenter", "lines"], "episodes.segmenter"),
    (["--data.format", "csv"], "data.format"),
    (["--model.dtype", "int8"], "model.dtype"),
    (["--meta_prover.enabled", "false"], "meta_prover.enabled"),   # algo mrt needs the meta-prover
    (["rl.alpha", "1"], "rl.alpha"),
])
def test_bad_override_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    print(e.value)
    assert str(e.value).startswith(key)


def test_bad_yaml_names_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"rl": {"alpha": 1.0, "clip_hgh": 0.3}}))
    with pytest.raises(ConfigError, match=r"^rl\.clip_hgh: unknown"):
        load_config(str(p))
    p.write_text(yaml.safe_dump({"optim": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a number"):
        load_config(str(p))
    p.write_text(yaml.safe_dump({"optim": 3}))
    with pytest.raises(ConfigError, match=r"^optim: expected a mapping"):
        load_config(str(p))


def test_removed_keys_say_so(tmp_path):
    """An old config that still sets a removed key gets told so, naming the key."""
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({"logging": {"every": 1}, "rl": {"normalize_progress": False}}))
    with pytest.raises(ConfigError, match=r"^logging\.every: removed"):
        load_config(str(p))
    p.write_text(yaml.safe_dump({"rl": {"normalize_progress": False}}))
    with pytest.raises(ConfigError, match=r"^rl\.normalize_progress: removed"):
        load_config(str(p))
    with pytest.raises(ConfigError, match=r"^rl\.normalize_progress: removed"):
        load_config(None, ["--rl.normalize_progress", "false"])


def test_to_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["--rl.alpha", "0.25", "--episodes.markers", "[Wait, 'Hmm, no']"])
    p = tmp_path / "r.yaml"
    cfg.save(str(p))
    assert load_config(str(p)) == cfg
    assert "alpha: 0.25" in cfg.to_yaml()
