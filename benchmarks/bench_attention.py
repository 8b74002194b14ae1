"""Paged attention: time per call and achieved bandwidth of each backend, against the device's own copy bandwidth.

Decode reads every cached key and value once, so its speed limit is memory bandwidth: achieved = (K/V bytes of all
contexts + q + out) / time, compared with a device-to-device copy measured in the same run (read + write bytes /
time). Goal on a GPU: >= 60% of copy bandwidth at batch 64 x 4k context (R1-Distill-Qwen-1.5B heads: 12 query heads,
2 KV heads, head dim 128, bf16, blocks of 16 scattered in random order). A prefill-with-prefix case is timed too,
and on the CPU short runs of 2, 4 and 8 new tokens per sequence: where the auto choice moves from the C++ kernel to
SDPA (mrt_kernels.paged_attention.CPP_MAX_ROWS).

    python benchmarks/bench_attention.py --size cpu      # small, fp32: reference, sdpa, cpp (triton off-interpreter)
    python benchmarks/bench_attention.py --size gpu      # the goal's size
Prints a table and writes JSON (default bench_results/bench_attention.json).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from mrt_kernels.paged_attention import PAGED_ATTENTION_BACKENDS, _unavailable, paged_attention

SIZES = {  # decode (batch, context), prefill (batch, prefix, new tokens), heads, dtype, iterations
    "cpu": dict(decode=(4, 512), prefill=(2, 200, 56), chunks=[(8, 600, 2), (8, 600, 4), (8, 600, 8)], hq=12, hkv=2, d=128,
                dtype=torch.float32, iters=5),
    "gpu": dict(decode=(64, 4096), prefill=(4, 3072, 1024), chunks=[], hq=12, hkv=2, d=128, dtype=torch.bfloat16,
                iters=50),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, iters):
    """Seconds per call, after two warm-up calls (compilation, caches)."""
    fn()
    fn()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def copy_bandwidth(device, iters):
    """Bytes per second of a device-to-device copy (read + write)."""
    n = (1 << 30 if device.type == "cuda" else 1 << 27) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).fill_(1)
    dst = torch.empty_like(src)
    t = _time(lambda: dst.copy_(src), device, iters)
    return 2 * src.numel() * src.element_size() / t


def make_case(batch, prefix, q_len, hq, hkv, d, block_size, dtype, device):
    """Sequences of context prefix + q_len whose blocks are scattered in random order; returns args and bytes read."""
    ctx = prefix + q_len
    nb = -(-ctx // block_size)
    k_cache = torch.randn(batch * nb, block_size, hkv, d, device=device, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.randperm(batch * nb, device=device).view(batch, nb).int()
    context_lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)
    cu = torch.arange(0, batch + 1, dtype=torch.int32, device=device) * q_len
    q = torch.randn(batch * q_len, hq, d, device=device, dtype=dtype)
    el = torch.finfo(dtype).bits // 8
    bytes_moved = (2 * batch * ctx * hkv * d + 2 * q.numel()) * el      # K and V once, q in, out back
    return (q, k_cache, v_cache, block_tables, context_lens, cu, q_len, ctx), bytes_moved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: gpu where CUDA is available, else cpu")
    parser.add_argument("--out", default=os.path.join("bench_results", "bench_attention.json"))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; on a shared machine 1 is steadier)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or ("gpu" if torch.cuda.is_available() else "cpu")
    cfg = SIZES[size]
    device = torch.device("cuda" if size == "gpu" else "cpu")
    dtype, hq, hkv, d, iters = cfg["dtype"], cfg["hq"], cfg["hkv"], cfg["d"], cfg["iters"]
    copy_bw = copy_bandwidth(device, iters)

    rows = []
    b, ctx = cfg["decode"]
    pb, prefix, new = cfg["prefill"]
    cases = [(f"decode {b}x{ctx}", (b, ctx - 1, 1)), (f"prefill {pb}x({prefix}+{new})", (pb, prefix, new))]
    cases += [(f"chunk {cb}x({cp}+{cn})", (cb, cp, cn)) for cb, cp, cn in cfg["chunks"]]
    for case, (batch, pre, q_len) in cases:
        for backend in PAGED_ATTENTION_BACKENDS:
            block_size = 256 if backend == "flash_attn" else 16
            call_args, moved = make_case(batch, pre, q_len, hq, hkv, d, block_size, dtype, device)
            reason = _unavailable(backend, call_args[0], block_size)
            if reason is None and backend == "triton" and device.type == "cpu":
                reason = "Triton on the CPU is the interpreter (tests only)"
            if reason is not None:
                rows.append(dict(case=case, backend=backend, batch=batch, prefix=pre, q_len=q_len, skipped=reason))
                continue
            scale = 1 / math.sqrt(d)
            t = _time(lambda: paged_attention(*call_args, scale=scale, backend=backend), device, iters)
            rows.append(dict(case=case, backend=backend, batch=batch, prefix=pre, q_len=q_len,
                             block_size=block_size, ms=t * 1e3, GBps=moved / t / 1e9,
                             pct_of_copy=100 * moved / t / copy_bw))
            del call_args
            if device.type == "cuda":
                torch.cuda.empty_cache()

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"paged attention, {size} size, {dev_name}, {dtype}, Hq {hq} / Hkv {hkv} / D {d}; "
          f"copy bandwidth {copy_bw / 1e9:.1f} GB/s")
    print(f"{'case':<26} {'backend':<11} {'block':>5} {'ms':>9} {'GB/s':>8} {'% copy':>7}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['case']:<26} {r['backend']:<11} skipped: {r['skipped'][:70]}")
        else:
            print(f"{r['case']:<26} {r['backend']:<11} {r['block_size']:>5} {r['ms']:>9.3f} {r['GBps']:>8.2f} "
                  f"{r['pct_of_copy']:>6.1f}%")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(benchmark="attention", size=size, device=dev_name, dtype=str(dtype), heads=[hq, hkv, d],
                       copy_GBps=copy_bw / 1e9, goal="decode >= 60% of copy bandwidth at 64 x 4k on a GPU",
                       rows=rows), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
