"""The Python API (mrt.api): `from mrt import Trainer, load_config`, configs from a file, a mapping or a Config plus
overrides, a run in one process without torchrun that returns its metrics; and `import mrt` stays light (no torch
until a Trainer is asked for)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"optim.steps": 2, "optim.prompts_per_step": 2, "rollout.group_size": 4, "rollout.max_new_tokens": 48,
        "eval.held_out": 4, "eval.samples": 1, "data.num_problems": 32, "logging.progress_bar": False,
        "logging.plots": False, "checkpoint.every": 0}


def test_import_mrt_is_light_and_resolves_lazily():
    code = ("import sys, mrt\n"
            "assert 'torch' not in sys.modules and 'mrt.trainer' not in sys.modules, sorted(sys.modules)\n"
            "from mrt import load_config\n"
            "assert 'torch' not in sys.modules, 'load_config pulled in torch'\n"
            "from mrt import Trainer\n"
            "import mrt.trainer\n"
            "assert Trainer is mrt.trainer.Trainer\n"
            "try:\n    mrt.nope\nexcept AttributeError as e:\n    print('ok', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok module 'mrt' has no attribute 'nope'" in proc.stdout


def test_load_config_from_file_mapping_and_config():
    from mrt import load_config
    from mrt.config import ConfigError
    from mrt.config import load_config as from_cli
    assert load_config() == from_cli()
    path = os.path.join(ROOT, "configs", "tiny_mrt.yaml")
    a = load_config(path, {"rl.alpha": 0.5, "rollout.top_k": None, "episodes.markers": ["Wait", "Hmm"]})
    b = load_config(path, ["--rl.alpha", "0.5", "--episodes.markers", "Wait,Hmm"])
    assert a == b and a.rl.alpha == 0.5 and a.episodes.markers == ["Wait", "Hmm"]
    tree = {"optim": {"steps": 7}, "rl": {"algo": "grpo"}}
    c = load_config(tree, {"optim.lr": 3e-4})
    assert (c.optim.steps, c.rl.algo, c.optim.lr) == (7, "grpo", 3e-4)
    assert tree == {"optim": {"steps": 7}, "rl": {"algo": "grpo"}}       # the caller's mapping is not modified
    d = load_config(c, {"seed": 3})
    assert d.seed == 3 and c.seed == 0 and d.optim.steps == 7
    with pytest.raises(ConfigError, match=r"optim\.stepz: unknown config key"):
        load_config(None, {"optim.stepz": 1})
    with pytest.raises(ConfigError, match=r"rl\.alpha: expected a number"):
        load_config({"rl": {"alpha": "much"}})
    with pytest.raises(ConfigError, match="expected a YAML path, a mapping or a Config"):
        load_config(3)


def test_the_readme_example_trains_in_process(tmp_path, monkeypatch):
    """The README's five lines (with a smaller run), in this process: no torchrun, metrics returned."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.chdir(ROOT)
    from mrt import Trainer, load_config
    cfg = load_config("configs/tiny_mrt.yaml", {**FAST, "logging.out_dir": str(tmp_path / "nb")})
    result = Trainer(cfg).train()
    rewards = [r["reward"] for r in result["records"] if r["kind"] == "train"]
    print(result["after"]["eval/accuracy"], rewards[-1])
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    assert result["step"] == 2 and not result["interrupted"]
    assert 0.0 <= result["after"]["eval/accuracy"] <= 1.0 and "eval/regret" in result["before"]
    assert (tmp_path / "nb" / "metrics.jsonl").read_text().count('"kind": "train"') == 2
