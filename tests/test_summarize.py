"""benchmarks/summarize.py's roofline: the bytes and FLOPs of each op as the benchmarks size it, and measured / roofline
only on GPU-size rows."""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _load(name: str):
    sys.path.insert(0, BENCH)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(BENCH)


def test_attention_bytes_match_the_benchmark_and_flops_count_causal_keys():
    summ, bench = _load("summarize"), _load("bench_attention")
    for batch, prefix, q_len in [(3, 40, 1), (2, 17, 9)]:
        _, moved = bench.make_case(batch, prefix, q_len, 4, 2, 8, 16, torch.bfloat16, "cpu")
        bytes_, flops = summ.attention_cost(batch, prefix, q_len, 4, 2, 8, 2)
        assert bytes_ == moved
        # Token i of q_len sees prefix + i + 1 keys; 4 FLOPs per (query head, key, dim): QK^T and PV.
        keys = batch * sum(prefix + i + 1 for i in range(q_len))
        assert flops == 4 * 4 * 8 * keys


def test_roofline_columns_only_on_gpu_rows():
    summ = _load("summarize")
    gpu = dict(size="gpu", n=1024, d=64, v=1000, dtype="bfloat16", results=[dict(method="m", time_s=2e-3)])
    summ.add_roofline(gpu, gpu["results"])
    row = gpu["results"][0]
    flops = 6 * 1024 * 64 * 1000
    bytes_ = 2 * (1024 * 64 + 1000 * 64) * 2 + 1024 * 8
    roof_ms = 1e3 * max(bytes_ / summ.COPY_BYTES_PER_S, flops / summ.BF16_FLOPS_PER_S)
    assert abs(row["roof_ms"] - roof_ms) <= 1e-12 * roof_ms
    assert abs(row["x_roof"] - 2.0 / roof_ms) <= 1e-9 * row["x_roof"]
    cpu = dict(gpu, size="cpu", results=[dict(method="m", time_s=2e-3)])
    summ.add_roofline(cpu, cpu["results"])
    assert "roof_ms" not in cpu["results"][0]


def test_predict_covers_every_gpu_benchmark_size():
    summ, adv = _load("summarize"), _load("bench_advantages")
    rows = summ.predicted_rows()
    assert len(rows) == 3 + len(adv.SIZES["gpu"])
    decode = rows[0]
    assert decode["bound"] == "memory" and decode["roof_ms"] > 0
    logprobs = next(r for r in rows if r["op"].startswith("logprobs"))
    assert logprobs["bound"] == "compute"
