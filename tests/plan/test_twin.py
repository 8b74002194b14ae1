"""The GRPO twin: the matching *_grpo.yaml preset when it exists, else the config with GRPO forced."""
import shutil

from mrt.plan.twin import config_pair


def test_paper_preset_twin_is_the_grpo_preset():
    mrt, grpo, src = config_pair("configs/r1_distill_qwen_1p5b_mrt.yaml", ["--meta_prover.m", "4"])
    assert src["grpo"] == "configs/r1_distill_qwen_1p5b_grpo.yaml".join(["", ""]) or src["grpo"].endswith(
        "r1_distill_qwen_1p5b_grpo.yaml")
    assert grpo.rl.algo == "grpo" and not grpo.meta_prover.enabled
    assert grpo.logging.out_dir == "runs/r1_distill_qwen_1p5b_grpo"      # read from the preset file
    assert mrt.meta_prover.m == 4 and mrt.rl.algo == "mrt"


def test_grpo_preset_pairs_with_the_mrt_preset():
    mrt, grpo, src = config_pair("configs/deepscaler_1p5b_grpo.yaml", [])
    assert src["mrt"].endswith("deepscaler_1p5b_mrt.yaml") and mrt.meta_prover.prompt_branches


def test_without_a_sibling_the_twin_is_the_config_with_grpo_forced(tmp_path):
    p = tmp_path / "my_run.yaml"
    shutil.copy("configs/r1_distill_qwen_1p5b_mrt.yaml", p)
    mrt, grpo, src = config_pair(str(p), [])
    assert "rl.algo grpo" in src["grpo"]
    assert grpo.rl.algo == "grpo" and not grpo.meta_prover.enabled
    assert grpo.rollout == mrt.rollout and grpo.logging.out_dir == mrt.logging.out_dir
    d, g, s = config_pair(None, [])                     # the embedded default
    assert g.rl.algo == "grpo" and d.rl.algo == "mrt" and "embedded default" in s["grpo"]
