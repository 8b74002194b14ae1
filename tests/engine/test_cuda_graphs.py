"""Decode steps on static buffers (mrt/rollout/cuda_graphs.py).

On the CPU the static-buffer path runs without capture: it must give the plain path's tokens and log-probs bit for
bit, greedy and seeded, with forks and preemption (the stress test's workload on an ample and on a tiny cache).
With padding forced on (as the CUDA graphs pad), the padding rows must write only the spare block: the tokens stay
the same and the log-probs differ only by the rounding of a matrix product with more rows. On a GPU (marked gpu)
the captured graphs must give the eager path's greedy tokens, also after the KV cache moves.
"""
from __future__ import annotations

import pytest
import torch

from mrt.config import load_config
from mrt.models import CausalLM
from mrt.rollout import Engine, SamplingParams
from mrt.rollout.cuda_graphs import DecodeGraphs, bucket_sizes
from tests.engine import test_engine_stress as stress
from tests.tiny_hf import tiny_qwen2


@pytest.fixture(scope="module")
def model():
    return tiny_qwen2(stress.VOCAB, seed=7)


def _run(model, seed: int, temperature: float, num_blocks: int, cuda_graphs: bool | None, pad: bool = False):
    prompts, params = stress._workload(seed, temperature)

    def hook(view):
        return stress._fork_plan(seed, view.request_index, view.sample_index, len(view.output_token_ids),
                                 len(view.prompt_token_ids), temperature)

    engine = Engine(model, block_size=stress.BLOCK, num_blocks=num_blocks, max_num_batched_tokens=48,
                    cuda_graphs=cuda_graphs)
    if pad:
        engine.runner.graphs.pad = True
    gen = engine.generate(prompts, params, hook=hook)
    engine.block_manager.check_invariants([])
    return stress._flatten(gen.outputs), gen.stats, engine


def test_buckets():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(3) == [1, 2, 4]
    assert bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(20) == [1, 2, 4, 8, 16, 32]
    assert bucket_sizes(256) == [1, 2, 4, 8] + list(range(16, 257, 16))
    with pytest.raises(ValueError, match="max_batch"):
        bucket_sizes(0)


def test_off_by_default_on_the_cpu(model):
    assert Engine(model, block_size=4, num_blocks=8).runner.graphs is None
    engine = Engine(model, block_size=4, num_blocks=8, cuda_graphs=True)
    assert engine.runner.graphs is not None and not engine.runner.graphs.capture
    assert engine.kv_cache.shape[2] == engine.runner.capacity + 1          # the padding rows' spare block
    with pytest.raises(ValueError, match="CUDA device"):
        DecodeGraphs(model, max_batch=4, block_size=4, max_model_len=32, capture=True)


def test_config_switch():
    assert load_config(None).rollout.cuda_graphs is True
    assert load_config(None, ["--rollout.cuda_graphs", "false"]).rollout.cuda_graphs is False


@pytest.mark.parametrize("num_blocks", [512, 16], ids=["ample", "tiny"])
@pytest.mark.parametrize("seed,temperature", [(0, 0.0), (1, 1.0)], ids=["greedy", "seeded"])
def test_static_buffers_give_the_plain_paths_outputs(model, seed, temperature, num_blocks):
    want, want_stats, _ = _run(model, seed, temperature, num_blocks, cuda_graphs=False)
    got, stats, engine = _run(model, seed, temperature, num_blocks, cuda_graphs=True)
    assert engine.runner.graphs.steps > 0, "no step took the static-buffer path"
    if num_blocks == 16:
        assert stats.preemptions > 0 and stats.cow_copies > 0, stats
    assert stats.as_dict() == want_stats.as_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key][0] == want[key][0], f"{key}: static {got[key][0]}, plain {want[key][0]}"
        assert torch.equal(got[key][1], want[key][1]), f"{key}: log-probs differ"


@pytest.mark.parametrize("seed,temperature", [(0, 0.0), (1, 1.0)], ids=["greedy", "seeded"])
def test_padding_rows_touch_only_the_spare_block(model, seed, temperature):
    want, _, _ = _run(model, seed, temperature, 16, cuda_graphs=False)
    got, _, engine = _run(model, seed, temperature, 16, cuda_graphs=True, pad=True)
    graphs = engine.runner.graphs
    assert graphs.steps > 0 and graphs.padded_rows > 0
    assert engine.kv_cache[:, :, -1].abs().sum() > 0, "the padding rows wrote nothing into the spare block"
    assert got.keys() == want.keys()
    for key in want:
        assert got[key][0] == want[key][0], f"{key}: padded {got[key][0]}, plain {want[key][0]}"
        torch.testing.assert_close(got[key][1], want[key][1], atol=1e-5, rtol=0)      # float32 rounding


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphs_on_a_gpu_replay_the_static_path(model, dtype):
    """The captured graphs against the same static buffers run eagerly with the same padding: the same kernels on the
    same shapes, so the same bits; against the plain eager path (other matrix shapes): fp32 tokens equal, log-probs
    close. Then a growing cache moves under the graphs: they are dropped and captured again."""
    gpu_model = CausalLM.from_config(model.config, dtype=dtype, device="cuda")
    gpu_model.load_state_dict(model.state_dict())
    prompts = [[1 + (7 * i + j) % (stress.VOCAB - 1) for j in range(3 + i % 5)] for i in range(21)]
    params = SamplingParams(temperature=0.0, max_tokens=40, n=2, stop_token_ids=[])

    def outputs(eager_static=False, **kw):
        engine = Engine(gpu_model, block_size=4, num_blocks=512, max_num_seqs=64, **kw)
        if eager_static:
            engine.runner.graphs.capture, engine.runner.graphs.pad = False, True
        gen = engine.generate(prompts, params)
        return [c.token_ids for r in gen.outputs for c in r.outputs], \
            torch.cat([c.logprobs for r in gen.outputs for c in r.outputs]), engine.runner.graphs

    static, static_lp, _ = outputs(eager_static=True, cuda_graphs=True)
    got, got_lp, graphs = outputs()                                      # on by default on CUDA
    assert graphs is not None and graphs.capture and graphs.captures > 0 and graphs.steps > 0
    assert got == static and torch.equal(got_lp, static_lp)
    plain, plain_lp, _ = outputs(cuda_graphs=False)
    if dtype == torch.float32:
        assert got == plain
        torch.testing.assert_close(got_lp, plain_lp, atol=1e-4, rtol=0)
    grown, grown_lp, graphs = outputs(grow_kv_cache=True)
    assert graphs.invalidations > 0
    assert grown == got and torch.equal(grown_lp, got_lp)
