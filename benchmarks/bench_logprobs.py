"""Per-token log-probs through the lm-head, forward + backward (grad of hidden and weight): the eager
`log_softmax(hidden @ weight.T).gather` against each fused backend of mrt_kernels.fused_linear_logprobs, and against
Liger-Kernel's chunked GRPO log-prob path and fused linear cross-entropy where liger_kernel is installed.

Each method runs in its own subprocess, so peak memory is its own: on the CPU the peak resident set above the
inputs (VmHWM - VmRSS once inputs exist), on a GPU torch.cuda.max_memory_allocated above the inputs. Gradients of
hidden and weight count as memory (every method must produce them; grad_W alone is about 0.25x the eager peak
at the CPU size); `work GB` is the peak less those gradients. `matmul` is the time of the same three matmuls
(h W^T, dZ W, dZ^T h) alone: the fused rate is reported against it (the fused op does four: see its module docstring).

    python benchmarks/bench_logprobs.py --size cpu     # N = 2,048, d = 1,536, V = 151,936 fp32 (Qwen2-1.5B lm-head)
    python benchmarks/bench_logprobs.py --size gpu     # N = 16,384 bf16
Prints a table and writes bench_results/logprobs_<size>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = {
    "cpu": dict(n=2048, d=1536, v=151936, dtype="float32", device="cpu", repeats=1),
    "gpu": dict(n=16384, d=1536, v=151936, dtype="bfloat16", device="cuda", repeats=5),
    "tiny": dict(n=256, d=256, v=8192, dtype="float32", device="cpu", repeats=1),  # smoke run of this script
}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _method(name: str):
    """fn(hidden, weight, targets) -> scalar loss whose backward fills hidden.grad and weight.grad."""
    import torch

    if name == "naive":
        def run(h, w, t):
            return torch.log_softmax(h @ w.T, dim=-1).gather(1, t[:, None]).sum()
        return run
    if name == "matmul":  # the three matmuls of the naive forward + backward, nothing else
        def run(h, w, t):
            with torch.no_grad():
                z = h @ w.T
                h.grad = z @ w
                w.grad = z.T @ h
            return None
        return run
    if name.startswith("fused-"):
        from mrt_kernels.fused_linear_logprobs import fused_linear_logprobs
        backend = name.split("-", 1)[1]
        return lambda h, w, t: fused_linear_logprobs(h, w, t, backend=backend).sum()
    if name == "liger-grpo-chunked":
        # Liger's chunked GRPO loss computes per-token log-probs one chunk of sequences at a time in PyTorch
        # (torch.compile on a GPU; eager on the CPU, where compiling would dominate): the N tokens as sequences of
        # 256, one sequence per chunk, no reference model.
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
        loss_fn = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, chunk_size=1,
                                           compiled=torch.cuda.is_available())

        def run(h, w, t):
            seq = 256 if h.shape[0] % 256 == 0 else h.shape[0]
            b = h.shape[0] // seq
            mask = torch.ones(b, seq, device=h.device)
            out = loss_fn(h.view(b, seq, -1), w, t.view(b, seq), mask, torch.ones(b, device=h.device))
            return out[0] if isinstance(out, tuple) else out
        return run
    if name == "liger-flce":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        return lambda h, w, t: loss_fn(w, h, t)
    raise ValueError(name)


def child(name: str, size: str) -> dict:
    """Run one method in this process; return its time and peak memory."""
    import torch

    cfg = SIZES[size]
    dev, dtype = torch.device(cfg["device"]), getattr(torch, cfg["dtype"])
    n, d, v = cfg["n"], cfg["d"], cfg["v"]
    run = _method(name)
    g = torch.Generator(device=dev).manual_seed(0)
    w = (torch.randn(v, d, device=dev, generator=g) * d ** -0.5).to(dtype).requires_grad_()

    def inputs(rows):
        h = torch.randn(rows, d, device=dev, generator=g).to(dtype).requires_grad_()
        return h, torch.randint(0, v, (rows,), device=dev, generator=g)

    def step(h, t):
        h.grad = w.grad = None
        loss = run(h, w, t)
        if loss is not None:
            loss.backward()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step(*inputs(min(n, 64)))  # warm-up: libraries, kernels, compile caches
    h, t = inputs(n)
    w.grad = None
    sync()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
        # VmHWM can only be reset through /proc/self/clear_refs; without it the warm-up's peak (small) stays.
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    times = []
    for _ in range(cfg["repeats"]):
        sync()
        t0 = time.perf_counter()
        step(h, t)
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _rss_kib("VmHWM") * 1024
    grads = sum(x.numel() * x.element_size() for x in (h.grad, w.grad) if x is not None)
    return {"method": name, "time_s": min(times), "peak_extra_gb": (peak - base) / 1e9,
            "workspace_gb": (peak - base - grads) / 1e9}


def methods(size: str) -> list[str]:
    import torch

    from mrt_kernels import _backend

    dev = torch.device(SIZES[size]["device"])
    names = ["naive", "matmul"]
    kw = dict(cpp_op="fused_linear_logprobs_fwd", triton_ok=True)
    for b in ("cpp", "triton"):
        if b == "triton" and dev.type == "cpu":
            continue  # the interpreter is for tests, far too slow here
        if _backend.unavailable_reason(b, dev, **kw) is None:
            names.append(f"fused-{b}")
    try:
        import liger_kernel  # noqa: F401
        names.append("liger-grpo-chunked")
        if dev.type == "cuda":  # Liger's fused linear cross-entropy is Triton: GPU only
            names.append("liger-flce")
    except Exception:
        pass
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--only", nargs="*", help="run only these methods")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="JSON path (default bench_results/logprobs_<size>.json)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size)))
        return
    cfg = SIZES[args.size]
    rows = []
    for name in args.only or methods(args.size):
        proc = subprocess.run([sys.executable, __file__, "--size", args.size, "--child", name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"method": name, "error": err[:200]})
            print(f"{name}: failed: {err[:200]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    naive = next((r for r in rows if r["method"] == "naive" and "error" not in r), None)
    mm = next((r for r in rows if r["method"] == "matmul" and "error" not in r), None)
    print(f"fused_linear_logprobs fwd+bwd  N={cfg['n']} d={cfg['d']} V={cfg['v']} {cfg['dtype']} {cfg['device']}")
    print(f"{'method':<20}{'time s':>9}{'x naive':>9}{'peak GB':>9}{'x naive':>9}{'work GB':>9}{'mm rate':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<20}  failed")
            continue
        if naive:
            r["time_vs_naive"] = r["time_s"] / naive["time_s"]
            r["mem_vs_naive"] = r["peak_extra_gb"] / max(naive["peak_extra_gb"], 1e-9)
        if mm:
            r["matmul_rate"] = mm["time_s"] / r["time_s"]  # share of the 3-matmul time: 1.0 = matmuls only
        print(f"{r['method']:<20}{r['time_s']:>9.2f}{r.get('time_vs_naive', float('nan')):>9.2f}"
              f"{r['peak_extra_gb']:>9.2f}{r.get('mem_vs_naive', float('nan')):>9.2f}{r['workspace_gb']:>9.2f}"
              f"{r.get('matmul_rate', float('nan')):>9.2f}")
    out = args.out or os.path.join("bench_results", f"logprobs_{args.size}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"size": args.size, **cfg, "results": rows}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
