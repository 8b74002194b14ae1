"""Print one table from the JSON files the benchmarks wrote: one block per file, one line per measured row; beside each
GPU-size row of an op benchmark, its roofline on an H200.

Each benchmark writes {..., "rows" (or another name): [ {column: value}, ... ]}; columns are printed as found, so a
new benchmark needs no change here.

Roofline: the bytes the op must move and the FLOPs it must do at the row's size (the least any implementation could:
each input read once, each output written once), and the time they take at the H200's ceilings measured on this
workplace's machines (KINDS.md of the device tool: a device-to-device copy moves 4.3 TB/s counting reads and
writes; an 8192^3 bf16 matrix product runs at ~790 TFLOP/s): roof_ms = max(bytes / 4.3 TB/s, FLOPs / 790 TFLOP/s).
x_roof = measured / roof_ms (1.0 = at the ceiling). The GPU goals read off it: decode attention >= 60% of copy
bandwidth is x_roof <= 1.67 on its decode row; fused log-probs >= 70% of cuBLAS is the `matmul_rate` column.

    python benchmarks/summarize.py bench_results/*.json
    python benchmarks/summarize.py --predict      # the roofline of every GPU benchmark size, before any GPU run
"""
from __future__ import annotations

import json
import os
import sys

COPY_BYTES_PER_S = 4.3e12   # H200, device-to-device copy, read + write bytes (KINDS.md, measured)
BF16_FLOPS_PER_S = 790e12   # H200, 8192^3 bf16 torch.matmul on random data (KINDS.md, measured)
ELEM = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _elem(dtype: str) -> int:
    return ELEM[str(dtype).replace("torch.", "")]


# ---- bytes and FLOPs of each op at a row's size ---------------------------------------------------------------------

def attention_cost(batch: int, prefix: int, q_len: int, hq: int, hkv: int, d: int, el: int) -> tuple[float, float]:
    """Paged attention of `batch` sequences of q_len new tokens after `prefix` cached ones: K and V of every context
    read once, q read and out written once; QK^T and PV cost 2 FLOPs a multiply-add each over the keys each query
    sees (causal: token i sees prefix + i + 1)."""
    ctx = prefix + q_len
    bytes_ = (2 * batch * ctx * hkv * d + 2 * batch * q_len * hq * d) * el
    keys_seen = batch * (q_len * prefix + q_len * (q_len + 1) // 2)
    return bytes_, 4.0 * hq * d * keys_seen


def logprobs_cost(n: int, d: int, v: int, el: int) -> tuple[float, float]:
    """Log-probs forward + backward: read hidden (N, d) and the lm-head (V, d), write their gradients; the three
    matmuls h W^T, dZ W and dZ^T h (2 N d V FLOPs each). The fused op recomputes the logits once more (4 matmuls) by
    choice, to hold no (N, V) tensor: the roofline is that of the op, not of the algorithm."""
    return 2.0 * (n * d + v * d) * el + n * 8, 6.0 * n * d * v


def advantages_cost(B: int, T: int, E: int) -> tuple[float, float]:
    """progress_advantages: read the int64 offsets / ends / group ids and float64 J / J_prompt / rewards, write the
    float32 advantages (T,), progress (E,) and regret (B,); a handful of FLOPs a token (counted as none)."""
    return 8.0 * (2 * (B + 1) + 2 * E + 3 * B) + 4.0 * (T + E + B), 0.0


def _row_cost(kind: str, data: dict, row: dict) -> tuple[float, float] | None:
    if kind == "attention" and "batch" in row:
        hq, hkv, d = data["heads"]
        return attention_cost(row["batch"], row["prefix"], row["q_len"], hq, hkv, d, _elem(data["dtype"]))
    if kind == "logprobs":
        return logprobs_cost(data["n"], data["d"], data["v"], _elem(data["dtype"]))
    if kind == "advantages" and "E" in row:
        return advantages_cost(row["B"], row["T"], row["E"])
    return None


def _measured_ms(row: dict) -> float | None:
    if isinstance(row.get("ms"), (int, float)):
        return float(row["ms"])
    if isinstance(row.get("time_s"), (int, float)):
        return 1e3 * row["time_s"]
    return None


def _kind(data: dict) -> str | None:
    if "benchmark" in data:
        return data["benchmark"]
    if {"n", "d", "v", "results"} <= data.keys():  # bench_logprobs
        return "logprobs"
    return None


def add_roofline(data: dict, rows: list[dict]) -> None:
    """Roofline columns on each row of a GPU-size op benchmark (in place)."""
    kind = _kind(data)
    if data.get("size") != "gpu" or kind is None:
        return
    for row in rows:
        cost = _row_cost(kind, data, row)
        if cost is None:
            continue
        bytes_, flops = cost
        roof_ms = 1e3 * max(bytes_ / COPY_BYTES_PER_S, flops / BF16_FLOPS_PER_S)
        row.update(roof_GB=bytes_ / 1e9, roof_GFLOP=flops / 1e9, roof_ms=roof_ms)
        measured = _measured_ms(row)
        if measured is not None:
            row["x_roof"] = measured / roof_ms


# ---- printing --------------------------------------------------------------------------------------------------------

def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (list, dict))))
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def summarize(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    # The rows: the first list of dicts in the file ("rows", "results", "runs", ... as each benchmark names it).
    rows = next((v for v in data.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)), [])
    if not rows:  # or one dict per method: {"mrt": {...}, "grpo": {...}}
        rows = [{"name": k, **v} for k, v in data.items() if isinstance(v, dict)]
    add_roofline(data, rows)
    header = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
    print_rows(f"{path}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in header.items()), rows)


def predicted_rows() -> list[dict]:
    """The roofline of each op benchmark at its --size gpu, read from the benchmark scripts' SIZES."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_advantages
    import bench_attention
    import bench_logprobs

    rows = []
    a = bench_attention.SIZES["gpu"]
    el = _elem(str(a["dtype"]))
    b, ctx = a["decode"]
    pb, prefix, new = a["prefill"]
    for case, (batch, pre, q_len) in [(f"decode {b}x{ctx}", (b, ctx - 1, 1)),
                                      (f"prefill {pb}x({prefix}+{new})", (pb, prefix, new))]:
        rows.append(("attention " + case, attention_cost(batch, pre, q_len, a["hq"], a["hkv"], a["d"], el)))
    g = bench_logprobs.SIZES["gpu"]
    rows.append((f"logprobs fwd+bwd N={g['n']} d={g['d']} V={g['v']} {g['dtype']}",
                 logprobs_cost(g["n"], g["d"], g["v"], _elem(g["dtype"]))))
    for s in bench_advantages.SIZES["gpu"]:
        T, E = s["B"] * s["L"], s["B"] * s["K"]  # L is the mean trace length of make_batch
        rows.append((f"advantages B={s['B']} T~{T} E={E}", advantages_cost(s["B"], T, E)))
    return [dict(op=op, roof_GB=by / 1e9, roof_GFLOP=fl / 1e9, bound="memory" if by / COPY_BYTES_PER_S >= fl /
                 BF16_FLOPS_PER_S else "compute", roof_ms=1e3 * max(by / COPY_BYTES_PER_S, fl / BF16_FLOPS_PER_S))
            for op, (by, fl) in rows]


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="JSON files the benchmarks wrote (bench_results/*.json)")
    ap.add_argument("--predict", action="store_true", help="print the roofline of every GPU benchmark size")
    a = ap.parse_args()
    if a.predict:
        print_rows(f"H200 roofline at the GPU benchmark sizes ({COPY_BYTES_PER_S / 1e12:.1f} TB/s, "
                   f"{BF16_FLOPS_PER_S / 1e12:.0f} TFLOP/s bf16)", predicted_rows())
    if not a.files and not a.predict:
        ap.error("give JSON files to summarize, or --predict")
    for p in a.files:
        try:
            summarize(p)
        except (OSError, ValueError, KeyError) as exc:
            print(f"\n## {p}: unreadable ({exc})")


if __name__ == "__main__":
    main()
