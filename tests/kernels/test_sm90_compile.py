"""The sm_90 compile audit (benchmarks/sm90_compile.py): every Triton kernel of mrt_kernels, at the configurations the
GPU path launches, and every csrc/*.cu compile for Hopper without spills, within shared memory, 16-bit dots on
wgmma; a simulated rollout compiles a handful of variants. Also: the audit's own rules, and the tiles the launchers
pick for a GPU computed under the interpreter against the float64 truth.

The audit runs in a subprocess: this session runs Triton's interpreter, the audit its compiler.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "sm90_compile.py")


def _audit_module():
    spec = importlib.util.spec_from_file_location("sm90_compile", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    env = os.environ.get("TRITON_INTERPRET")
    spec.loader.exec_module(mod)  # sets TRITON_INTERPRET=0 for its own process: put this session's value back
    if env is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = env
    return mod


def _tools_missing() -> str | None:
    try:
        import triton
    except ImportError:
        return "Triton is not installed (the dev extra installs it)"
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(cuobjdump):
        return f"Triton's cuobjdump is missing ({cuobjdump})"
    return None


def test_audit_passes_and_covers_every_kernel(tmp_path):
    missing = _tools_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--jobs", "2"], env=env, capture_output=True,
                          text=True, timeout=900)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    data = json.loads(out.read_text())
    assert not data["failures"], report
    rows = [r for r in data["rows"] if "regs" in r]
    assert all(r["regs"] > 0 and r["local"] == 0 for r in rows), report
    kernels = {r["kernel"] for r in data["rows"]}
    assert set(_audit_module().triton_kernels_in_sources(ROOT)) <= kernels, report
    if "nvcc" not in data["skipped"]:
        assert {"trace_kernel", "group_kernel", "token_kernel"} <= kernels, report
    # The rollout's hot path: attention compiles decode / prefill x split / no split at most, the merge once; the
    # update's kernels once each whatever the batch sizes (the log-prob forward: once, with entropy and grad).
    rollouts = [ro for ro in data["rollout"] if ro["workload"] == "rollout"]
    assert len(rollouts) == 2 and all(ro["steps"] > 100 for ro in rollouts)
    for ro in rollouts:
        assert ro["variants"]["_paged_attention_kernel"] <= 4, ro
        assert ro["variants"]["_merge_splits_kernel"] == 1, ro
    (training,) = [ro for ro in data["rollout"] if ro["workload"] == "training"]
    assert set(training["variants"].values()) == {1}, training


def test_blocks_per_sm_follows_the_sm90_limits():
    mod = _audit_module()
    # 218 registers round to 224 a thread: 224 * 128 = 28,672 a block of 4 warps -> 2 of 65,536.
    assert mod.blocks_per_sm(218, 4, 82944) == (2, "regs")
    # 32 registers: 4,096 a block; registers would allow 16, warps 64 / 4 = 16, shared memory 232 KB / 1 KB more.
    assert mod.blocks_per_sm(32, 4, 0)[0] == 16
    # 100 KB of shared memory (+1 KB reserved) twice fits 228 KB, three times does not.
    assert mod.blocks_per_sm(32, 4, 100 * 1024) == (2, "smem")
    # 255 registers (256) x 8 warps = one whole register file.
    assert mod.blocks_per_sm(255, 8, 0) == (1, "regs")


def test_findings_catch_each_failure():
    mod = _audit_module()
    good = dict(kernel="k", case="c", config="", regs=64, local=0, shared=1024, warps=4, mma="wgmma",
                dots=[(64, "bf16")])
    assert mod.findings([good], [], []) == []
    bad = [dict(good, local=16), dict(good, shared=228 * 1024), dict(good, mma="mma.sync"), dict(good, error="x")]
    found = mod.findings(bad, [dict(workload="rollout", model="m", dtype="bf16", variants={"k": 9})], ["lost_kernel"])
    assert len(found) == 6, found
    assert mod.findings([dict(good, mma="mma.sync", dots=[(16, "bf16")])], [], []) == []  # decode rows: mma.sync
    assert mod.findings([dict(good, mma="fma", dots=[(64, "fp32")])], [], []) == []      # fp32: IEEE products


@pytest.mark.parametrize("pairs", [[(12, 140), (1, 200)], [(1, 300), (1, 290)]], ids=["prefill", "decode"])
def test_gpu_tile_choice_under_the_interpreter(seed, monkeypatch, pairs):
    """The tiles and split counts the launcher picks on an H200 (132 SMs; fp32 prefill: 16-key chunks) are right."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the GPU choices on CPU tensors under the interpreter")
    from mrt_kernels import _paged_attention_triton as pa
    from mrt_kernels.paged_attention import paged_attention_ref
    from tests.kernels.test_paged_attention import _case, _check_close, _error

    monkeypatch.setattr(pa, "_sm_count", lambda device: 132)
    args, truth = _case(pairs, 6, 2, 24, 16, torch.float32, "cpu")
    scale = 1 / math.sqrt(24)
    splits = pa._num_splits(torch.device("cpu"), 8 if pairs[0][0] > 1 else 4, max(c for _, c in pairs),
                            16 if pairs[0][0] > 1 else 64)
    assert splits > 1  # the split path, as on the GPU
    eager = float(_error(paged_attention_ref(*args, scale=scale), truth).max())
    out = pa.paged_attention_triton(*args, scale)
    _check_close("triton, H200 tiles", out, eager, truth, torch.float32, pairs)


def test_gpu_logprob_tiles_under_the_interpreter(seed, monkeypatch):
    """The (rows, columns) tile the log-prob kernels take on a GPU, with ragged last rows and columns, is right."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the GPU choices on CPU tensors under the interpreter")
    from mrt_kernels import _fused_linear_logprobs_triton as tri
    from tests.kernels.test_fused_linear_logprobs import CPU, _check

    gpu_blocks = tri._blocks(torch.device("cuda"))
    assert gpu_blocks != tri._blocks(CPU)
    monkeypatch.setattr(tri, "_blocks", lambda device: gpu_blocks)
    _check("triton", CPU, torch.float32, 70, 2500, 48, temperature=1.3, chunk_size=32, vocab_tile=2200,
           monkeypatch=monkeypatch)
