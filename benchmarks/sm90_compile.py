"""Compile every Triton and CUDA kernel of the project for Hopper (sm_90) on a machine without a GPU, and report
what a GPU run would meet: shared memory, registers, spills, tensor-core path, occupancy, recompiles.

Triton: the real launchers of mrt_kernels run on meta tensors at the GPU benchmarks' sizes (benchmarks/bench_*.py
--size gpu) with Triton's JIT launch replaced by a recorder; the launchers see a meta tensor as an H200 (132 SMs). Each
distinct launch (Triton's own specialization key: constexprs, argument types, divisibility by 16, warps, stages) is
then compiled by triton.compile for GPUTarget("cuda", 90, 32), exactly what the JIT would compile on the GPU. Registers
and local memory come from `cuobjdump --dump-resource-usage` of the cubin (the copy Triton ships: the system ptxas
rejects Triton's newer PTX); shared memory from the compiled metadata; `wgmma` / `mma.sync` from the PTX.
CUDA: every csrc/*.cu through `nvcc -c -arch=sm_90 -Xptxas -v` (no torch headers there, so no GPU torch is needed).
A rollout simulation (prompts of 50-4,096 tokens, chunked prefill under a token budget, decode, forks with 40-token
continuations) and training steps of varying sizes count the variants the kernels compile.

Occupancy is blocks per SM, the least of what registers, shared memory, warps and the block cap allow (H200 limits
below); waves = the case's programs / (blocks per SM x 132 SMs), so 1.6 means a last wave 60% full.
Fails (exit 1) on: a compile error, any local memory (spills), shared memory over the per-block limit, a 16-bit
tl.dot whose tile has >= 64 rows without wgmma (below 64 rows a warpgroup instruction has no rows to fill, so
mma.sync is the expected path), more variants of a kernel in one simulated workload than ROLLOUT_MAX_VARIANTS.

    python benchmarks/sm90_compile.py                    # all kernels, table + bench_results/sm90_compile.json
    python benchmarks/sm90_compile.py --jobs 2 --out x.json
Compiled kernels are cached by Triton (~/.triton/cache, or TRITON_CACHE_DIR): a second run takes seconds.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

os.environ["TRITON_INTERPRET"] = "0"  # compile, do not interpret (the tests' conftest turns the interpreter on)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

# H200 (sm_90) per-SM limits, from the CUDA occupancy rules for compute capability 9.0.
H200 = dict(
    sms=132,
    regs_per_sm=65536,
    reg_unit_per_warp=256,        # registers are handed to a warp in units of 256 (8 per thread)
    max_warps_per_sm=64,
    max_blocks_per_sm=32,
    smem_per_sm=228 * 1024,
    smem_per_block=227 * 1024,    # the most one block may ask for (dynamic, after cudaFuncSetAttribute)
    smem_reserved_per_block=1024,  # the driver keeps 1 KB of each block's shared memory
)
ROLLOUT_MAX_VARIANTS = 8  # a kernel compiled more often than this in one rollout recompiles in the hot path
TARGET = ("cuda", 90, 32)


def blocks_per_sm(regs: int, warps: int, smem: int) -> tuple[int, str]:
    """(blocks of `warps` warps that fit one SM, the limiting resource)."""
    regs_per_warp = -(-max(regs, 1) * 32 // H200["reg_unit_per_warp"]) * H200["reg_unit_per_warp"]
    limits = {
        "regs": H200["regs_per_sm"] // (regs_per_warp * warps),
        "smem": H200["smem_per_sm"] // (smem + H200["smem_reserved_per_block"]),
        "warps": H200["max_warps_per_sm"] // warps,
        "blocks": H200["max_blocks_per_sm"],
    }
    which = min(limits, key=limits.get)
    return limits[which], which


# ---------------------------------------------------------------------------------------------------------------------
# Recording the launches the launchers make.

class LaunchRecorder:
    """Within `with`, `kernel[grid](...)` records Triton's specialization of the launch instead of running it.

    variants: {(kernel name, key): (fn, bound args, specialization, options, kwargs)}; cases and grids: the label
    and the grid of the first launch of each; case: the label put on launches recorded from now on."""

    def __init__(self):
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        self.target = GPUTarget(*TARGET)
        self.backend = make_backend(self.target)
        self.variants, self.cases, self.grids, self.binders = {}, {}, {}, {}
        self.case = ""
        self._jit = triton.runtime.jit.JITFunction

    def _run(self, fn, *args, grid, warmup, **kwargs):
        from triton.runtime.jit import create_function_from_signature

        if fn not in self.binders:
            self.binders[fn] = create_function_from_signature(fn.signature, fn.params, self.backend)
        bound, spec, options = self.binders[fn](*args, **kwargs)
        key = (fn.__name__, repr(spec) + repr(sorted(options.items())))
        self.variants.setdefault(key, (fn, bound, spec, options, kwargs))
        self.cases.setdefault(key, self.case)
        self.grids.setdefault(key, tuple(grid))
        return None

    def __enter__(self):
        self._saved = self._jit.run
        recorder = self
        self._jit.run = lambda fn, *a, **kw: recorder._run(fn, *a, **kw)
        return self

    def __exit__(self, *exc):
        self._jit.run = self._saved


def gpu_launcher_view():
    """Make the launchers choose as on an H200 for meta tensors (the only device-dependent choices they make)."""
    from mrt_kernels import _fused_linear_logprobs_triton as flp
    from mrt_kernels import _paged_attention_triton as pa

    cuda = torch.device("cuda")
    blocks = flp._blocks
    flp._blocks = lambda device: blocks(cuda)
    pa._sm_count = lambda device: H200["sms"]


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


# ---------------------------------------------------------------------------------------------------------------------
# The GPU benchmarks' launches (sizes of bench_logprobs / bench_advantages / bench_attention --size gpu).

MODELS = {  # (query heads, KV heads, head dim) of the two model shapes the engine serves
    "D128": (12, 2, 128),  # DeepSeek-R1-Distill-Qwen-1.5B
    "D64": (14, 2, 64),    # Qwen2.5-0.5B
}
BLOCK_SIZE = 16


def launch_logprobs(rec: LaunchRecorder) -> None:
    from mrt_kernels import _fused_linear_logprobs_triton as flp
    from mrt_kernels.fused_linear_logprobs import CHUNK_SIZE, VOCAB_TILE

    n, d, v = 16384, 1536, 151936
    for dtype, ent, grad in [(torch.bfloat16, False, True), (torch.bfloat16, True, True),
                             (torch.bfloat16, True, False), (torch.float32, True, True)]:
        rec.case = f"logprobs {n}x{d}x{v} {str(dtype)[6:]} entropy={ent} grad_h={grad}"
        h, w, t = meta(n, d, dtype=dtype), meta(v, d, dtype=dtype), meta(n, dtype=torch.int64)
        flp.fwd(h, w, t, 1.0, -100, ent, grad, CHUNK_SIZE["cuda"], VOCAB_TILE["cuda"])
        if grad:
            lse, g = meta(n), meta(n)
            flp.bwd_weight(g, h, w, t, lse, 1.0, -100, CHUNK_SIZE["cuda"], VOCAB_TILE["cuda"])


def _advantage_inputs(B: int, L: int, K: int) -> dict:
    i64, f64 = torch.int64, torch.float64
    T, E = B * L, B * K
    return dict(token_offsets=meta(B + 1, dtype=i64), episode_offsets=meta(B + 1, dtype=i64),
                episode_ends=meta(E, dtype=i64), J=meta(E, dtype=f64), J_prompt=meta(B, dtype=f64),
                rewards=meta(B, dtype=f64), order=meta(B, dtype=i64), sorted_group_ids=meta(B, dtype=i64),
                num_tokens=T, eps=1e-6)


def launch_advantages(rec: LaunchRecorder) -> None:
    from mrt_kernels._progress_advantages_triton import progress_advantages_triton

    for B in (4096, 16384):
        for mode in range(3):
            for scale in (True, False) if mode == 0 else (True,):
                rec.case = f"advantages B={B} T={B * 2000} mode={mode} scale_by_std={scale}"
                progress_advantages_triton(**_advantage_inputs(B, 2000, 16), alpha=1.0, mode=mode,
                                           scale_by_std=scale)


def _attention_step(q_lens: list[int], ctx_lens: list[int], model: str, dtype) -> None:
    """One paged-attention call (and the K/V store before it) of a batch with these new and total lengths."""
    from mrt_kernels._paged_attention_triton import paged_attention_triton
    from mrt_kernels.kv_cache import _store_kv_triton

    hq, hkv, d = MODELS[model]
    n = sum(q_lens)
    width = max(-(-c // BLOCK_SIZE) for c in ctx_lens)
    q = meta(n, hq, d, dtype=dtype)
    qkv = meta(n, (hq + 2 * hkv) * d, dtype=dtype)  # K and V are strided views of a fused projection
    k = qkv[:, hq * d:(hq + hkv) * d].view(n, hkv, d)
    cache = meta(64, BLOCK_SIZE, hkv, d, dtype=dtype)
    _store_kv_triton(k, k, cache, cache, meta(n, dtype=torch.int64))
    b = len(q_lens)
    paged_attention_triton(q, cache, cache, meta(b, width, dtype=torch.int32), meta(b, dtype=torch.int32),
                           meta(b + 1, dtype=torch.int32), max(q_lens), max(ctx_lens), d ** -0.5)


def _copy_step(pairs: int, model: str, dtype, layers: int = 28) -> None:
    from mrt_kernels.kv_cache import _copy_blocks_triton

    _, hkv, d = MODELS[model]
    _copy_blocks_triton(meta(layers, 2, 64, BLOCK_SIZE, hkv, d, dtype=dtype), meta(pairs, dtype=torch.int64),
                        meta(pairs, dtype=torch.int64))


def launch_attention(rec: LaunchRecorder) -> None:
    cases = {"decode 64x4096": ([1] * 64, [4096] * 64),
             "prefill 4x(3072+1024)": ([1024] * 4, [4096] * 4),
             "fork 8x(4096+40)": ([40] * 8, [4136] * 8)}
    for model, dtype in [("D128", torch.bfloat16), ("D64", torch.bfloat16), ("D128", torch.float32)]:
        for name, (q_lens, ctx_lens) in cases.items():
            rec.case = f"attention {name} {model} {str(dtype)[6:]}"
            _attention_step(q_lens, ctx_lens, model, dtype)
        rec.case = f"copy_blocks 8 pairs {model} {str(dtype)[6:]}"
        _copy_step(8, model, dtype)


LAUNCH_SETS = {"logprobs": launch_logprobs, "advantages": launch_advantages, "attention": launch_attention}


# ---------------------------------------------------------------------------------------------------------------------
# A rollout's launches: how many variants its kernels compile.

def rollout_steps(seed: int = 0, prompts: int = 32, group: int = 4, budget: int = 8192, max_seqs: int = 256,
                  episode: int = 96, forks: int = 4, continuation: int = 40, answer: int = 16):
    """Yield (q_lens, ctx_lens, copies) of each step of a continuous-batching rollout: prompts of 50-4,096 tokens
    (log-uniform) prefilled once per group in chunks under the token budget, `group` traces of 100-600 new tokens
    each, and at every `episode` tokens of a trace a fork: a `continuation`-token prefill on the trace's context,
    then `forks` answers of `answer` tokens (one copy-on-write block each)."""
    import random

    rnd = random.Random(seed)
    # A sequence: [context computed, tokens left to prefill, tokens left to decode, what follows its prefill]
    waiting = [[0, int(50 * (4096 / 50) ** rnd.random()), 0, "prompt"] for _ in range(prompts)]
    running = []
    while waiting or running:
        q_lens, ctx_lens, copies, left = [], [], 0, budget
        decoding = [s for s in running if s[1] == 0][:max_seqs]
        for s in decoding:
            q_lens.append(1)
            ctx_lens.append(s[0] + 1)
        left -= len(decoding)
        prefilling = [s for s in running if s[1] > 0] + waiting
        scheduled = []
        for s in prefilling:
            if left <= 0 or len(q_lens) >= max_seqs:
                break
            n = min(s[1], left)
            q_lens.append(n)
            ctx_lens.append(s[0] + n)
            scheduled.append((s, n))
            left -= n
        for s, n in scheduled:
            if s in waiting:
                waiting.remove(s)
                running.append(s)
            s[0] += n
            s[1] -= n
            if s[1] == 0 and s[3] == "prompt":  # the group's traces share the prompt's blocks
                running.remove(s)
                running += [[s[0], 0, rnd.randint(100, 600), "trace"] for _ in range(group)]
            elif s[1] == 0 and s[3] == "fork":
                running.remove(s)
                running += [[s[0], 0, answer, "answer"] for _ in range(forks)]
                copies += forks
        for s in decoding:
            s[0] += 1
            s[2] -= 1
            if s[3] == "trace" and s[2] > 0 and s[2] % episode == 0:
                running.append([s[0], continuation, 0, "fork"])
            if s[2] == 0:
                running.remove(s)
        if q_lens:
            yield q_lens, ctx_lens, copies


def _per_kernel(rec: LaunchRecorder) -> dict:
    per_kernel = {}
    for name, _ in rec.variants:
        per_kernel[name] = per_kernel.get(name, 0) + 1
    return per_kernel


def rollout_variants(model: str = "D128", dtype=torch.bfloat16) -> dict:
    """Run the rollout's launches through the launchers; {kernel: distinct compiles}, steps."""
    steps = 0
    with LaunchRecorder() as rec:
        for q_lens, ctx_lens, copies in rollout_steps():
            _attention_step(q_lens, ctx_lens, model, dtype)
            if copies:
                _copy_step(copies, model, dtype)
            steps += 1
    return dict(workload="rollout", model=model, dtype=str(dtype)[6:], steps=steps, variants=_per_kernel(rec))


def training_variants(steps: int = 12, seed: int = 0) -> dict:
    """The update's launches over `steps` steps whose sizes change as they do in training (dynamic sampling keeps a
    varying number B of traces; their lengths set the packed tokens T and episodes E; micro-batches of N tokens):
    progress_advantages once a step (dense), log-probs forward with entropy and backward per micro-batch (bf16,
    d = 1536, V = 151,936). {kernel: distinct compiles}."""
    import random

    from mrt_kernels import _fused_linear_logprobs_triton as flp
    from mrt_kernels._progress_advantages_triton import progress_advantages_triton
    from mrt_kernels.fused_linear_logprobs import CHUNK_SIZE, VOCAB_TILE

    rnd = random.Random(seed)
    d, v = 1536, 151936
    with LaunchRecorder() as rec:
        for _ in range(steps):
            B = rnd.randint(700, 1024)
            inputs = _advantage_inputs(B, rnd.randint(800, 3000), 1)
            E = rnd.randint(B, 16 * B)
            inputs.update(episode_ends=meta(E, dtype=torch.int64), J=meta(E, dtype=torch.float64))
            progress_advantages_triton(**inputs, alpha=1.0, mode=0, scale_by_std=True)
            n = rnd.randint(4000, 20000)
            h, w, t = meta(n, d, dtype=torch.bfloat16), meta(v, d, dtype=torch.bfloat16), meta(n, dtype=torch.int64)
            flp.fwd(h, w, t, 1.0, -100, True, True, CHUNK_SIZE["cuda"], VOCAB_TILE["cuda"])
            flp.bwd_weight(meta(n), h, w, t, meta(n), 1.0, -100, CHUNK_SIZE["cuda"], VOCAB_TILE["cuda"])
    return dict(workload="training", model="d1536 V151936", dtype="bfloat16", steps=steps, variants=_per_kernel(rec))


# ---------------------------------------------------------------------------------------------------------------------
# Compiling and reading resources.

def _tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _triton_version() -> str | None:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return None


def _dots(ttir: str) -> list[tuple[int, str]]:
    """(rows, operand element type) of each tt.dot in the Triton IR: `tt.dot ... : tensor<MxKxT> * ...`."""
    return [(int(m), t) for m, t in re.findall(r"tt\.dot .*?: tensor<(\d+)x\d+x(\w+)", ttir)]


def compile_variant(job: tuple) -> dict:
    """Compile one specialization for sm_90; read its resources. Runs in a worker process."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name, signature, constexprs, attrs, options = job
    fn = getattr(importlib.import_module(module), name)
    t0 = time.perf_counter()
    try:
        k = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget(*TARGET), options=options)
    except Exception as exc:  # any compiler error is a finding, reported with its message
        return dict(error=f"{type(exc).__name__}: {exc}".strip()[:400])
    seconds = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                               text=True).stdout
    res = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    ptx, dots = k.asm["ptx"], _dots(k.asm["ttir"])
    mma = "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "fma" if dots else "-"
    return dict(regs=int(res.get("REG", -1)), local=int(res.get("LOCAL", 0)) + int(res.get("STACK", 0)),
                shared=k.metadata.shared + int(res.get("SHARED", 0)), warps=k.metadata.num_warps,
                stages=k.metadata.num_stages, mma=mma, dots=dots, compile_s=seconds)


def _config(spec, params, options) -> str:
    """The variant in words: its constexprs, the first pointer's dtype, warps and stages."""
    consts = [f"{p.name}={v[1]}" for p, v in zip(params, spec) if v[0] == "constexpr"]
    ptr = next((v[0][1:] for v in spec if isinstance(v[0], str) and v[0].startswith("*")), "")
    return " ".join([ptr] + consts + [f"w{options.get('num_warps', 4)}", f"s{options.get('num_stages', 3)}"])


def triton_jobs(rec: LaunchRecorder) -> list[tuple[dict, tuple]]:
    """(row stub, compile job) per recorded variant, the job's arguments as the JIT would pass them."""
    out = []
    for (name, _), (fn, bound, spec, options, kwargs) in sorted(rec.variants.items(), key=lambda kv: kv[0]):
        opts, signature, constexprs, attrs = fn._pack_args(rec.backend, kwargs, bound, spec, options)
        programs = 1
        for g in rec.grids[(name, _)]:
            programs *= g
        row = dict(kernel=name, case=rec.cases[(name, _)], config=_config(spec, fn.params, options),
                   programs=programs)
        out.append((row, (fn.fn.__module__, fn.fn.__name__, signature, constexprs, attrs, opts.__dict__)))
    return out


def triton_kernels_in_sources(root: str) -> list[str]:
    """Names of every launchable @triton.jit function under mrt_kernels/ (so a new kernel cannot escape the audit).

    A @triton.jit function called from another one of its file is a helper: Triton inlines it into its caller, so it
    is compiled (and audited) with every kernel that calls it and is not listed on its own."""
    names = []
    pkg = os.path.join(root, "mrt_kernels")
    for f in sorted(os.listdir(pkg)):
        if f.endswith(".py"):
            with open(os.path.join(pkg, f)) as fh:
                tree = ast.parse(fh.read())
            jitted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and any(_is_triton_jit(d) for d in
                                                                                     n.decorator_list)]
            called = {c.func.id for fn in jitted for c in ast.walk(fn)
                      if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            names += [fn.name for fn in jitted if fn.name not in called]
    return names


def _is_triton_jit(decorator: ast.expr) -> bool:
    """`@triton.jit` or `@triton.jit(...)`."""
    d = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(d, ast.Attribute) and d.attr == "jit" and isinstance(d.value, ast.Name) and d.value.id == "triton"


def nvcc_file(cu: str, root: str) -> list[dict]:
    """Every kernel of one .cu compiled by nvcc for sm_90, with ptxas's resource report. Runs in a worker process."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(["nvcc", "-c", "-arch=sm_90", "-std=c++17", "-O3", "-Xptxas", "-v", "-o",
                               os.path.join(tmp, "x.o"), cu], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    base = dict(kernel="", case=os.path.relpath(cu, root), config="nvcc sm_90, 256 threads", compile_s=seconds)
    if proc.returncode != 0:
        return [dict(base, error=(proc.stderr.strip().splitlines() or ["?"])[-1][:400])]
    rows = []
    for entry in re.split(r"Compiling entry function ", proc.stderr)[1:]:
        mangled = re.match(r"'([^']+)'", entry).group(1)
        demangled = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip()
        props = {k: int(v) for v, k in re.findall(r"(\d+) bytes (stack frame|spill stores|spill loads|smem)", entry)}
        regs = re.search(r"Used (\d+) registers", entry)
        name = (demangled or mangled).replace("(anonymous namespace)::", "").removeprefix("void ")
        rows.append(dict(base, kernel=name.split("(")[0], regs=int(regs.group(1)) if regs else -1, warps=8,
                         stages=0, mma="-", local=props.get("stack frame", 0) + props.get("spill stores", 0),
                         shared=props.get("smem", 0)))
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Checks, table, JSON.

def findings(rows: list[dict], rollout: list[dict], missing: list[str]) -> list[str]:
    """Every reason to fail, in words."""
    out = [f"{name}: no launch set compiles this @triton.jit kernel" for name in missing]
    for r in rows:
        what = f"{r['kernel']} [{r['case']}]"
        if "error" in r:
            out.append(f"{what}: compile error: {r['error']}")
            continue
        if r["local"] > 0:
            out.append(f"{what}: {r['local']} bytes of local memory per thread (register spills)")
        if r["shared"] > H200["smem_per_block"]:
            out.append(f"{what}: {r['shared']} bytes of shared memory > {H200['smem_per_block']} per block")
        wide16 = [rows_ for rows_, t in r.get("dots", []) if t in ("bf16", "f16") and rows_ >= 64]
        if wide16 and r["mma"] != "wgmma":
            out.append(f"{what}: 16-bit tl.dot of {wide16[0]} rows compiled to {r['mma']}, not wgmma")
    for ro in rollout:
        for name, n in ro["variants"].items():
            if n > ROLLOUT_MAX_VARIANTS:
                out.append(f"{name}: {n} variants in one {ro['workload']} ({ro['model']} {ro['dtype']}), more than "
                           f"{ROLLOUT_MAX_VARIANTS}: it recompiles in the hot path")
    return out


def print_table(rows: list[dict]) -> None:
    cols = [("kernel", 26), ("case", 44), ("config", 62), ("shared KB", 9), ("regs", 4), ("local B", 7),
            ("mma", 8), ("blocks/SM", 12), ("waves", 7), ("compile s", 9)]
    print("  ".join(name.ljust(w) for name, w in cols))
    for r in rows:
        if "error" in r:
            cells = [r["kernel"], r["case"], r["config"], "ERROR " + r["error"][:80]]
        else:
            cells = [r["kernel"], r["case"], r["config"], f"{r['shared'] / 1024:.1f}", str(r["regs"]),
                     str(r["local"]), r["mma"], f"{r['blocks_per_sm']} ({r['limit']})",
                     f"{r['waves']:.2f}" if "waves" in r else "", f"{r['compile_s']:.1f}"]
        print("  ".join(c[:w].ljust(w) if i < 3 else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, cols))))


def tools_missing() -> dict:
    """{part: why it cannot run here} for the Triton and the nvcc parts of the audit."""
    missing = {}
    try:
        import triton  # noqa: F401
        if not os.path.exists(_tool("cuobjdump")):
            missing["triton"] = f"Triton's cuobjdump is missing ({_tool('cuobjdump')})"
    except ImportError as exc:
        missing["triton"] = f"Triton is not installed ({exc})"
    if subprocess.run(["sh", "-c", "command -v nvcc"], capture_output=True).returncode != 0:
        missing["nvcc"] = "nvcc not found"
    return missing


def audit(root: str, jobs_n: int, skipped: dict) -> tuple[list[dict], list[dict], list[str]]:
    """(rows, rollout variant counts, @triton.jit kernels no launch set reached). The compiles run in worker
    processes while this one records the launches and simulates the rollout."""
    import glob

    stubs, jobs = [], []
    cus = [] if "nvcc" in skipped else sorted(glob.glob(os.path.join(root, "csrc", "*.cu")))
    with ProcessPoolExecutor(max_workers=jobs_n, mp_context=get_context("fork")) as pool:
        nvcc = [pool.submit(nvcc_file, cu, root) for cu in cus]
        if "triton" not in skipped:
            gpu_launcher_view()
            with LaunchRecorder() as rec:
                for launch in LAUNCH_SETS.values():
                    launch(rec)
            stubs, jobs = zip(*triton_jobs(rec))
        triton_results = pool.map(compile_variant, jobs)
        rollout = [] if "triton" in skipped else [rollout_variants(m, torch.bfloat16) for m in MODELS]
        rollout += [] if "triton" in skipped else [training_variants()]
        rows = [dict(stub, **res) for stub, res in zip(stubs, triton_results)]
        rows += [r for f in nvcc for r in f.result()]
    reached = {r["kernel"] for r in rows}
    missing = [] if "triton" in skipped else [k for k in triton_kernels_in_sources(root) if k not in reached]
    return rows, rollout, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join("bench_results", "sm90_compile.json"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    ap.add_argument("--skip-nvcc", action="store_true", help="Triton kernels only")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t0 = time.perf_counter()
    skipped = tools_missing()
    if args.skip_nvcc:
        skipped["nvcc"] = "--skip-nvcc"
    rows, rollout, missing = audit(root, args.jobs, skipped)
    for r in rows:
        if "error" not in r:
            r["blocks_per_sm"], r["limit"] = blocks_per_sm(r["regs"], r["warps"], r["shared"])
            if "programs" in r:  # full waves of resident blocks the case's grid takes (its tail: the fraction)
                r["waves"] = r["programs"] / (r["blocks_per_sm"] * H200["sms"])
    print(f"sm_90 compile audit (H200 limits: {H200['regs_per_sm']} registers, {H200['smem_per_sm'] // 1024} KB "
          f"shared memory per SM, {H200['smem_per_block'] // 1024} KB per block)")
    print_table(rows)
    for ro in rollout:
        print(f"{ro['workload']} ({ro['model']} {ro['dtype']}, {ro['steps']} steps): compiled variants per kernel "
              + ", ".join(f"{k} {v}" for k, v in sorted(ro["variants"].items())))
    for what, why in skipped.items():
        print(f"skipped {what}: {why}")
    bad = findings(rows, rollout, missing)
    for line in bad:
        print(f"FAIL {line}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(benchmark="sm90_compile", target="sm_90", triton=_triton_version(),
                       limits=H200, seconds=time.perf_counter() - t0, rows=rows, rollout=rollout,
                       skipped=skipped, failures=bad), f, indent=1)
    print(f"{len(rows)} variants, {len(bad)} failures, {time.perf_counter() - t0:.1f} s; wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
