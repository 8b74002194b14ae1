"""Device profiles: what one accelerator (or this machine's CPU) can do, the numbers every price is made of.

A price is a roofline: an op takes max(FLOPs / flop_rate, bytes / bandwidth), plus the host's cost of launching its
kernels. The rates are the datasheet's peaks times an efficiency that well-tuned kernels reach on them (dense bf16
GEMMs reach ~60-70% of the tensor-core peak on Hopper at large sizes; streaming kernels ~80% of HBM bandwidth);
`launch_s` is the host's cost per kernel of an eager PyTorch forward (a step replayed as a CUDA graph pays a handful,
mrt/plan/pricing_runner.py), `host_step_s` / `host_seq_s` the engine's own Python per step and per scheduled
sequence (scheduler, inputs, sampler, stop checks), `hook_seq_s` the meta-prover's hook per trace per step (online
segmentation detokenises each new token); none of it overlaps the device work, because each step ends by reading the
sampled tokens back. The GPU profiles' host figures are estimates for a server core (this machine's probe measures
about 0.2 ms and 10 us at one thread). The hook's 10 us: `benchmarks/bench_hook.py` measures the whole hook path
(the engine's view, the R1 preset's markers segmenter on the real 151k-entry Qwen2.5 BPE) at 6-7 us a trace a step
here, flat from 1k to 16k tokens, with a margin for a host that also feeds 8 GPUs. `hook_len_s`, a cost per token of
the trace per step, is 0: the engine's view copies nothing (before it did, ~3 ns a token, O(length^2) a trace).

H100 SXM5: 989 TFLOP/s dense bf16, 67 TFLOP/s fp32 (no TF32: torch's matmul default), 3.35 TB/s HBM3, 80 GB.
H200 SXM: the same chip with 4.8 TB/s HBM3e and 141 GB. NVLink 4: 450 GB/s each way per GPU (collectives reach about
three quarters of it).
`cpu`: measured on this machine by `probe_cpu` (a few seconds): an fp32 GEMM's rate, memory bandwidth (a 64 MB
copy), the rate at which a product with a few rows streams a 64 MB weight (what a decode step does: on one core far
below the bandwidth, the product is bound by its packing of the weight), the cost of one small module call (the
"launch"), and the engine's own Python per step, per sequence and in the meta-prover's hook per trace
(`probe_engine_host`, on the embedded tiny model with its forward timed apart).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from ..config import ConfigError, resolve_path


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    memory_bytes: float              # usable device memory
    bf16_flops: float                # dense peak, FLOP/s
    fp32_flops: float
    bandwidth: float                 # bytes/s, peak
    flops_efficiency: float = 0.65   # of the peak, for large GEMMs and attention
    bandwidth_efficiency: float = 0.8
    launch_s: float = 5e-6           # host time per kernel launch (eager PyTorch)
    launches_per_layer: float = 15.0 # kernels a decoder layer launches (mrt/rollout/cuda_graphs.py counts ~15)
    launches_per_step: float = 30.0  # embedding, final norm, head, sampler, metadata copies
    host_step_s: float = 1.0e-3      # engine Python per step
    host_seq_s: float = 12e-6        # engine Python per scheduled sequence per step
    hook_seq_s: float = 10e-6        # the meta-prover hook per trace per step (online segmentation, detokenising)
    hook_len_s: float = 0.0          # ... and per token of the trace (0: the engine's view copies nothing)
    weight_rate: float = 0.0         # bytes/s of a product streaming its weight with few rows (0: byte_rate)
    cache_bytes: float = 0.0         # activations smaller than this stay in cache: their traffic costs no bandwidth
    interconnect: float = 3.4e11     # bytes/s a collective moves per GPU (0: none)
    context_bytes: float = 0.6e9     # CUDA context and allocator slack, not available to tensors
    measured: bool = False           # rates from a probe on this machine

    def flop_rate(self, dtype_bytes: int) -> float:
        """Achievable FLOP/s for the model's dtype (2 bytes: bf16/fp16 tensor cores; 4: fp32)."""
        peak = self.bf16_flops if dtype_bytes == 2 else self.fp32_flops
        return peak * self.flops_efficiency

    @property
    def byte_rate(self) -> float:
        return self.bandwidth * self.bandwidth_efficiency

    @property
    def weight_byte_rate(self) -> float:
        return self.weight_rate or self.byte_rate

    def to_dict(self) -> dict:
        return asdict(self)


H100 = DeviceProfile("h100", memory_bytes=79.6e9, bf16_flops=989e12, fp32_flops=67e12, bandwidth=3.35e12)
H200 = DeviceProfile("h200", memory_bytes=140.4e9, bf16_flops=989e12, fp32_flops=67e12, bandwidth=4.8e12)
GPU_PROFILES = {"h100": H100, "h200": H200}
PROFILE_NAMES = ("h100", "h200", "cpu")

def probe_cpu(seconds: float = 0.4, shape=None) -> DeviceProfile:
    """Measure this machine with torch's current thread count: fp32 GEMM FLOP/s (1024^3 products), the bandwidth of
    streaming a 64 MB weight through F.linear with 8 rows (a decode step's access pattern), and one small op's cost.
    Each figure is the best of repeated runs for about `seconds`."""
    import os

    import torch
    import torch.nn.functional as F

    def best(fn, budget: float) -> float:
        # The median, not the minimum: the benchmarks it is checked against report medians of whole runs, which
        # a shared machine's load slows as much as it slows these.
        import statistics
        fn()
        times, t_end = [], time.perf_counter() + budget
        while True:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() > t_end and len(times) >= 3:
                return statistics.median(times)

    # The products at the model's own shapes when it is known (one core runs a 576-wide model's small k/v products
    # well below a 1024^3 GEMM's rate): one layer's seven products (q, k, v, o, gate, up, down) on 256 rows, and 8
    # rows through copies of that layer adding up to at least 64 MB (what a decode step streams, product after
    # product).
    if shape is not None:
        d, q, kv, inner = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, \
            shape.intermediate
        layer = [(q, d), (kv, d), (kv, d), (d, q), (inner, d), (inner, d), (d, inner)]
    else:
        layer = [(1024, 1024)]
    with torch.inference_mode():
        mats = [torch.randn(o, i) for o, i in layer]
        rows = {i: torch.randn(256, i) for _, i in layer}
        flops = sum(2 * 256 * m.numel() for m in mats)
        gemm = flops / best(lambda: [F.linear(rows[m.shape[1]], m) for m in mats], seconds)
        copies = max(1, -(-(64 << 20) // (sum(m.numel() for m in mats) * 4)))
        mats = [torch.randn(o, i) for _ in range(copies) for o, i in layer]
        few = {i: torch.randn(8, i) for _, i in layer}
        stream = sum(m.numel() for m in mats) * 4 / best(lambda: [F.linear(few[m.shape[1]], m) for m in mats],
                                                         seconds)
        w = torch.cat([m.flatten() for m in mats])
        y = torch.empty_like(w)
        copy = 2 * w.numel() * 4 / best(lambda: y.copy_(w), seconds / 2)   # read + write
    host_step, host_seq, hook_seq, ops, fwd_s, layers = probe_engine_host()
    # The tiny model's forward is nearly all dispatch: its median time over its ATen op count is one op's cost.
    op, per_layer = fwd_s / ops, max(ops - 30, 0) / layers
    cache = _l2_bytes()
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # Efficiencies are 1: the probe measured what these ops reach here, not a datasheet peak. bf16 on this CPU has
    # no fast GEMM path: a quarter of fp32's rate stands in (the CPU runs float32 models).
    return DeviceProfile("cpu", memory_bytes=float(mem), bf16_flops=gemm / 4, fp32_flops=gemm, bandwidth=copy,
                         weight_rate=stream, cache_bytes=cache,
                         flops_efficiency=1.0, bandwidth_efficiency=1.0, launch_s=op, launches_per_layer=per_layer,
                         launches_per_step=30.0, host_step_s=host_step,
                         host_seq_s=host_seq, hook_seq_s=hook_seq, hook_len_s=0.0, interconnect=0.0,
                         context_bytes=0.0,
                         measured=True)


def _l2_bytes() -> float:
    """This CPU's per-core L2 cache from sysfs (1 MB when it cannot be read)."""
    import glob
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{d}/level") as f:
                level = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if level == "2" and size.endswith("K"):
            return float(size[:-1]) * 1024
    return 1024.0 ** 2


def probe_engine_host(prompts: int = 16, new_tokens: int = 48) -> tuple[float, float, float, int, float, int]:
    """The engine's own Python on this machine: (per step, per scheduled sequence, the meta-prover hook per trace),
    from the embedded tiny model (mrt:assets/tiny_model) generating with the model's forward (runner.run) timed
    apart and left out. Mean host seconds a step with `prompts` and with prompts / 4 sequences give the per-step and
    per-sequence figures (two equations); the same with the meta-prover's hook gives the hook's per-trace cost.
    Also the ATen ops one decode forward dispatches (counted under a TorchDispatchMode), the forward's median time
    and the model's layer count. After one untimed warm-up call; about a second on an idle machine.
    -> (step s, sequence s, hook s per trace, ops per forward, forward s, layers)"""
    import statistics

    import torch

    from ..config import load_config
    from ..episodes import make_segmenter
    from ..meta_prover import MetaProver
    from ..hub import load_model
    from ..models.tokenizer import load_tokenizer
    from ..rollout import Engine, SamplingParams
    from ..tasks import arithmetic

    cfg = load_config(None, [])
    path = resolve_path(cfg.model.path)
    model = load_model(path, dtype=torch.float32, device="cpu")
    tok = load_tokenizer(path)
    prompt_ids = [tok(p.text)["input_ids"] for p in arithmetic.generate_problems(prompts, seed=0)]
    term = tok(cfg.meta_prover.termination_text, add_special_tokens=False)["input_ids"]
    eng = Engine(model, tok, block_size=cfg.rollout.block_size, num_blocks=2048)
    orig_run, orig_step, cur, rows = eng.runner.run, eng.step, {}, []

    def run(batch):
        t0 = time.perf_counter()
        out = orig_run(batch)
        cur["fwd"] = time.perf_counter() - t0
        fwd_times.append(cur["fwd"])
        return out

    def step(hook, stats):
        t0 = time.perf_counter()
        out = orig_step(hook, stats)
        rows.append(time.perf_counter() - t0 - cur["fwd"])
        return out

    eng.runner.run, eng.step = run, step
    fwd_times = []
    params = SamplingParams(temperature=1.0, max_tokens=new_tokens, stop_token_ids=[], seed=0)

    def host_per_step(n: int, with_hook: bool) -> float:
        hook = MetaProver.from_config(cfg.meta_prover, make_segmenter(cfg.episodes), tok, termination_ids=term,
                                      max_tokens=new_tokens, prompt_branches=False) if with_hook else None
        rows.clear()
        eng.reset_prefix_cache()
        eng.generate(prompt_ids[:n], params, hook=hook)
        return statistics.median(rows[1:])        # the first step holds the prompts' prefill

    host_per_step(prompts, True)                   # warm-up
    few = max(1, prompts // 4)
    fwd_times.clear()
    big, small, big_hook = host_per_step(prompts, False), host_per_step(few, False), host_per_step(prompts, True)
    seq_s = max(big - small, 0.0) / (prompts - few)
    step_s = max(small - few * seq_s, 0.0)
    return (step_s, seq_s, max(big_hook - big, 0.0) / prompts, _count_ops(eng, prompt_ids[:few]),
            statistics.median(fwd_times), model.config.num_layers)


def _count_ops(eng, prompts: list[list[int]]) -> int:
    """ATen ops one decode forward of the engine dispatches (the last step of a short generation)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ..rollout import SamplingParams

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    run, counts = eng.runner.run, []

    def counted(batch):
        with Count() as c:
            out = run(batch)
        counts.append(c.n)
        return out

    eng.runner.run = counted
    eng.reset_prefix_cache()
    eng.generate(prompts, SamplingParams(temperature=1.0, max_tokens=3, stop_token_ids=[], seed=0))
    eng.runner.run = run
    return counts[-1]


def get_profile(name: str, *, cpu_probe_seconds: float = 0.4, shape=None) -> DeviceProfile:
    """h100 | h200 | cpu (measured now, at `shape`'s product sizes when given); anything else raises ConfigError
    naming --gpu."""
    if name in GPU_PROFILES:
        return GPU_PROFILES[name]
    if name == "cpu":
        return probe_cpu(cpu_probe_seconds, shape=shape)
    raise ConfigError(f"--gpu: must be one of {list(PROFILE_NAMES)}, got {name!r}")


def with_rates(profile: DeviceProfile, **kw) -> DeviceProfile:
    """A copy with some figures replaced (tests, a user's own measurements)."""
    return replace(profile, **kw)
