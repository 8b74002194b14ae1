"""KV-cache sizing: from what the run can use (max_num_seqs x max_model_len, capped by memory_fraction), and on the
CPU a pool allocated on demand, so a real model's default engine does not reserve gigabytes up front.

The model has SmolLM2-135M's attention shape (30 layers, 9 heads, 3 KV heads, head dim 64: 46 KB of fp32 K/V a
token) and an 8k context, with a narrow residual stream and vocabulary so that it builds in a moment.
"""
from __future__ import annotations

import pytest
import torch

from mrt.models import ArchConfig, CausalLM
from mrt.rollout import Engine, SamplingParams
from mrt.rollout.runner import INITIAL_BLOCKS, kv_cache_bytes_per_block


def _model(num_layers: int) -> CausalLM:
    cfg = ArchConfig(architecture="LlamaForCausalLM", vocab_size=256, hidden_size=64, intermediate_size=64,
                     num_layers=num_layers, num_heads=9, num_kv_heads=3, head_dim=64, max_position_embeddings=8192,
                     tie_word_embeddings=True, eos_token_ids=[0])
    return CausalLM.from_config(cfg, std=0.3, generator=torch.Generator().manual_seed(0)).eval()


@pytest.fixture(scope="module")
def model():
    return _model(30)


@pytest.fixture(scope="module")
def shallow():
    """Two layers of the same shape: growth does not depend on depth, and decode steps are 15x cheaper."""
    return _model(2)


def test_a_real_models_default_engine_reserves_little_up_front(model):
    engine = Engine(model)                                  # defaults: 256 sequences of the 8k context
    per_block = kv_cache_bytes_per_block(model.config, 16, model.dtype)
    assert per_block == 30 * 2 * 16 * 3 * 64 * 4
    assert engine.runner.capacity == INITIAL_BLOCKS
    assert engine.kv_cache.nbytes == INITIAL_BLOCKS * per_block            # 47 MB
    # The ceiling is what 256 sequences of 8k tokens could use (96 GB), capped by a quarter of the free RAM.
    assert engine.block_manager.num_blocks <= 256 * 8192 // 16
    assert engine.block_manager.num_blocks > 8 * INITIAL_BLOCKS


def test_blocks_are_sized_from_the_runs_longest_sequence(model, shallow):
    engine = Engine(model, max_num_seqs=4, max_model_len=300)
    assert engine.block_manager.num_blocks == 4 * 19                       # 300 tokens: 19 blocks of 16
    bad = engine.generate([[5] * 300], SamplingParams(max_tokens=2)).outputs[0]
    assert bad.outputs == [] and "max_model_len" in bad.error
    out = Engine(shallow, max_num_seqs=4, max_model_len=300).generate(
        [[5] * 290], SamplingParams(temperature=0.0, max_tokens=50, stop_token_ids=[])).outputs
    assert len(out[0].outputs[0].token_ids) == 10 and out[0].outputs[0].finish_reason == "length"
    with pytest.raises(ValueError, match="max_model_len"):
        Engine(model, max_model_len=1)


def test_a_growing_pool_gives_the_tokens_of_a_preallocated_one(shallow):
    model = shallow
    g = torch.Generator().manual_seed(1)
    head = torch.randint(1, 256, (48,), generator=g).tolist()
    prompts = [head + torch.randint(1, 256, (150 + 7 * i,), generator=g).tolist() for i in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=24, n=2, stop_token_ids=[])
    fixed = Engine(model, num_blocks=256, grow_kv_cache=False)
    assert fixed.runner.capacity == 256
    want = fixed.generate(prompts, params)
    grown = Engine(model, num_blocks=256)
    got = grown.generate(prompts, params)
    # It grew while sequences held blocks (and the prefix cache served the shared head): 12 samples, ~100 blocks.
    assert INITIAL_BLOCKS < grown.runner.capacity <= 256 and got.stats.prompt_tokens_cached > 0
    for a, b in zip(got.outputs, want.outputs):
        assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
