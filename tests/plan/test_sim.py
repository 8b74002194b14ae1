"""The simulated rollout: the engine's scheduler and block manager on scripted traces, priced by the runner."""
import pytest

from mrt.config import load_config
from mrt.plan.memory import plan_memory
from mrt.plan.pricing_runner import PricingRunner
from mrt.plan.profiles import H100, with_rates
from mrt.plan.shape import load_shape
from mrt.plan.sim_engine import SimEngine
from mrt.plan.step import simulate_rollout
from mrt.plan.workload import TraceScript, Workload


def _setup(small_model_dir, extra=()):
    cfg = load_config(None, ["--model.path", small_model_dir, "--rollout.group_size", "2",
                             "--rollout.max_new_tokens", "64", "--meta_prover.m", "3"] + list(extra))
    shape = load_shape(small_model_dir, cfg.model.dtype)
    wl = Workload([[TraceScript(20, 40, [10, 30]), TraceScript(20, 57, [5])],
                   [TraceScript(33, 64, []), TraceScript(33, 11, [3, 7])]], termination_tokens=5, answer_tokens=4,
                  source="test")
    mem = plan_memory(cfg, shape, H100, 1, 26)
    return cfg, shape, wl, mem


def _sim(cfg, shape, wl, mem, **kw):
    return simulate_rollout(cfg, shape, H100, wl, mem, **kw)


def test_token_accounting_with_forks(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir)
    r = _sim(cfg, shape, wl, mem, meta=True)
    st = r.stats
    forks = 2 + 1 + 0 + 2                      # scripted boundaries (no bare-prompt branches in this config)
    assert st["generated_tokens"] == 40 + 57 + 64 + 11
    assert st["branches"] == 3 * forks
    assert st["branch_generated_tokens"] == 3 * forks * 4
    assert st["branch_prompt_tokens_computed"] == forks * 5      # the termination text, once per fork (its leader)
    assert st["preemptions"] == 0 and r.parts["recompute"].seconds == 0


def test_no_prefix_sharing_prefills_every_prefix(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir)
    r = _sim(cfg, shape, wl, mem, meta=True, variant="no_prefix_sharing")
    prefixes = [(20, b) for b in (10, 30, 5)] + [(33, b) for b in (3, 7)]
    assert r.stats["branch_prompt_tokens_computed"] == sum(3 * (p + b + 5) for p, b in prefixes)
    shared = _sim(cfg, shape, wl, mem, meta=True)
    assert r.parts["meta_prefill"].flops > 10 * shared.parts["meta_prefill"].flops


def test_cascade_reads_less_and_computes_the_same(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir)
    a = _sim(cfg, shape, wl, mem, meta=True)
    c = _sim(cfg, shape, wl, mem, meta=True, variant="cascade")
    assert c.parts["meta_decode"].flops == pytest.approx(a.parts["meta_decode"].flops)
    assert c.parts["meta_decode"].bytes < a.parts["meta_decode"].bytes
    assert c.prefix_kv_bytes < a.prefix_kv_bytes and c.cascade_saved_bytes > 0


def test_coarsening_keeps_the_totals(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir)
    fine = _sim(cfg, shape, wl, mem, meta=False, coarsen=1)
    coarse = _sim(cfg, shape, wl, mem, meta=False, coarsen=8)
    assert coarse.stats["generated_tokens"] == fine.stats["generated_tokens"]
    assert coarse.stats["steps"] < fine.stats["steps"]
    for part in ("rollout_prefill", "rollout_decode"):
        assert coarse.parts[part].flops == pytest.approx(fine.parts[part].flops)
    assert coarse.forwards == fine.forwards


def test_a_small_cache_preempts_and_recomputes(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir, ["--rollout.num_blocks", "10"])
    r = _sim(cfg, shape, wl, mem, meta=False)
    assert r.stats["preemptions"] > 0 and r.stats["recomputed_tokens"] > 0
    assert r.parts["recompute"].flops > 0
    assert r.stats["generated_tokens"] == 40 + 57 + 64 + 11


def test_one_sequence_priced_by_hand(small_model_dir):
    """Prompt of 16, 2 tokens: a prefill forward and a decode forward, all memory-bound at a tiny bandwidth with no
    launches: bytes = 2 x (layer weights + head weight + the sampler's 8 fp32 passes over V) + the keys read (16 by
    the prefill, 17 by the decode) x kv bytes per token; the elementwise traffic is cached away."""
    cfg, shape, _, mem = _setup(small_model_dir)
    prof = with_rates(H100, bf16_flops=1e30, fp32_flops=1e30, bandwidth=1e6, bandwidth_efficiency=1.0,
                      launch_s=0.0, host_step_s=0.0, host_seq_s=0.0, cache_bytes=1e12)
    runner = PricingRunner(shape, prof)
    eng = SimEngine(runner, num_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=512,
                    enable_prefix_caching=True, max_model_len=shape.context)
    eng.simulate(Workload([[TraceScript(16, 2)]], 5, 4, "one"), max_new_tokens=8)
    b = 2 * (shape.matmul_weight_bytes + shape.head_weight_bytes + 8 * 4 * shape.vocab) \
        + (16 + 17) * shape.kv_bytes_per_token
    total = sum(p.seconds for p in runner.parts.values())
    assert runner.forwards == 2
    assert total == pytest.approx(b / 1e6)


def test_cuda_graphs_replay_only_pure_decode_steps(small_model_dir):
    cfg, shape, wl, mem = _setup(small_model_dir)
    eager = _sim(cfg, shape, wl, mem, meta=True, cuda_graphs=False)
    graphs = _sim(cfg, shape, wl, mem, meta=True, cuda_graphs=True)
    assert eager.graph_steps == 0 < graphs.graph_steps < graphs.forwards
    assert graphs.parts["rollout_decode"].flops == eager.parts["rollout_decode"].flops
    assert graphs.parts["rollout_decode"].launch_s < eager.parts["rollout_decode"].launch_s
    # every step that prefills (prompts, fork continuations) stays eager: at least one per fork leader
    assert graphs.forwards - graphs.graph_steps >= 1 + 5
