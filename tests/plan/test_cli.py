"""`python -m mrt.plan`: the JSON keys, overrides, a config.json-only model folder, bad input."""
import json

import pytest

from mrt.plan.cli import main, run

SMALL_RUN = ["--optim.prompts_per_step", "4", "--rollout.group_size", "2", "--rollout.max_new_tokens", "64",
             "--optim.micro_batch_tokens", "512", "--meta_prover.prompt_branches", "true"]


def _plan(capsys, argv):
    main(argv + ["--json"])
    return json.loads(capsys.readouterr().out)


def test_json_keys_on_a_config_json_only_folder(small_model_dir, capsys):
    p = _plan(capsys, ["--model.path", small_model_dir, "--gpu", "h100", "--gpus", "2"] + SMALL_RUN)
    for key in ("params", "weights_bytes", "kv_bytes_per_token", "max_concurrent_seqs", "step_seconds",
                "mrt_over_grpo"):
        assert key in p, key
    assert p["params"] == 87104 and p["kv_bytes_per_token"] == 512      # float32: the embedded default
    assert set(p["step_seconds"]) == {"grpo", "mrt", "mrt_no_prefix_sharing", "mrt_cascade"}
    for algo in ("grpo", "mrt"):
        parts = p["step_seconds"][algo]
        for part in ("rollout_prefill", "rollout_decode", "meta_prefill", "meta_decode", "update_forward_backward",
                     "optimizer", "rollout", "update", "total"):
            assert part in parts, (algo, part)
        assert parts["total"] == pytest.approx(parts["rollout"] + parts["update"])
    assert p["step_seconds"]["grpo"]["meta_decode"] == 0
    assert p["step_seconds"]["mrt"]["meta_decode"] > 0
    assert p["mrt_over_grpo"] == pytest.approx(p["step_seconds"]["mrt"]["total"] / p["step_seconds"]["grpo"]["total"])
    assert p["workload"]["prompts_per_rank"] == 2 and p["workload"]["traces"] == 4


def test_overrides_reach_the_plan(small_model_dir, capsys):
    base = ["--model.path", small_model_dir, "--gpu", "h200", "--gpus", "1"] + SMALL_RUN
    a = _plan(capsys, base + ["--meta_prover.m", "2"])
    b = _plan(capsys, base + ["--meta_prover.m", "6"])
    branches = lambda p: p["simulation"]["mrt"]["engine"]["branches"]
    assert branches(b) == 3 * branches(a) > 0
    c = _plan(capsys, base + ["--rollout.max_new_tokens=32"])
    assert c["memory"]["seq_tokens"] < a["memory"]["seq_tokens"]
    assert c["workload"]["max_completion"] <= 32


def test_text_report(small_model_dir, capsys):
    main(["--model.path", small_model_dir, "--gpus", "1"] + SMALL_RUN)
    out = capsys.readouterr().out
    assert "memory per GPU" in out and "MRT / GRPO" in out and "KV cache" in out


@pytest.mark.parametrize("argv, needle", [
    (["--gpu", "tpu"], "--gpu"),
    (["--gpus", "0"], "--gpus"),
    (["--gpus", "two"], "--gpus"),
    (["--rl.no_such_key", "1"], "rl.no_such_key"),
    (["--rollout.group_size", "0"], "rollout.group_size"),
    (["--config", "no/such.yaml"], "--config"),
    (["--metrics", "no/such/metrics.jsonl"], "--metrics"),
    (["--workload", "no/such/workload.json"], "--workload"),
])
def test_bad_input_is_one_error_line_exit_2(small_model_dir, capsys, argv, needle):
    rc = run(["--model.path", small_model_dir] + SMALL_RUN + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_folder_without_config_json(tmp_path, capsys):
    rc = run(["--model.path", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model.path" in err[0] and "config.json" in err[0]


def test_metrics_and_workload_files(small_model_dir, tmp_path, capsys):
    m = tmp_path / "metrics.jsonl"
    m.write_text("\n".join(json.dumps({"kind": "train", "length": 40.0, "episodes": 3.0}) for _ in range(3)) + "\n")
    p = _plan(capsys, ["--model.path", small_model_dir, "--gpus", "1", "--metrics", str(m)] + SMALL_RUN)
    assert p["workload"]["source"].startswith("metrics")
    w = tmp_path / "workload.json"
    w.write_text(json.dumps({"traces": [{"prompt": 10, "completion": 30, "boundaries": [5, 20]}],
                             "termination_tokens": 4, "answer_tokens": 3}))
    q = _plan(capsys, ["--model.path", small_model_dir, "--gpus", "1", "--workload", str(w)] + SMALL_RUN)
    assert q["workload"]["mean_completion"] == 30 and q["workload"]["mean_boundaries"] == 2
    eng = q["simulation"]["mrt"]["engine"]
    m_ = 4       # the embedded default's meta_prover.m
    # 4 prompts x 2 samples = 8 traces (the file's one trace, cycled): 2 boundaries each, and each bare prompt
    assert eng["branches"] == (8 * 2 + 4) * m_
    assert eng["generated_tokens"] == 8 * 30
    assert eng["branch_generated_tokens"] == eng["branches"] * 3


def test_gpu_check_predictions(capsys):
    """The hook for benchmarks/gpu_check.sh: bench_rollout's engine rows at its gpu size, predicted."""
    main(["--gpu-check", "--gpu", "h200", "--json"])
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"(ii) engine, no sharing", "(iii) engine, forks", "engine"}
    assert 0 < rows["(iii) engine, forks"]["predicted_seconds"] < rows["(ii) engine, no sharing"]["predicted_seconds"]
    assert rows["engine"]["size"] == "gpu" and rows["engine"]["device"] == "h200"
