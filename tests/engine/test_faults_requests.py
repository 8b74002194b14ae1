"""The engine under bad requests: a prompt longer than the context or than the whole KV cache, an empty prompt, a
token id outside the vocabulary, a fork past its parent's end. Each fails alone, with its error in its output; every
other request of the call gives exactly (bit for bit) what a call without the bad ones gives."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mrt.models import CausalLM  # noqa: E402
from mrt.rollout import Engine, ForkRequest, SamplingParams  # noqa: E402
from tests.tiny_hf import unit_scale_weights_  # noqa: E402

VOCAB, CONTEXT = 103, 128


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(7)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=CONTEXT, eos_token_id=2, bos_token_id=1)
    path = tmp_path_factory.mktemp("llama")
    unit_scale_weights_(transformers.LlamaForCausalLM(cfg).eval()).save_pretrained(path)
    return CausalLM.from_pretrained(path, dtype=torch.float32)


def _same(a, b, what):
    assert a.error is None and b.error is None, what
    assert len(a.outputs) == len(b.outputs), what
    for x, y in zip(a.outputs, b.outputs):
        assert x.token_ids == y.token_ids and torch.equal(x.logprobs, y.logprobs), what
        assert x.finish_reason == y.finish_reason, what
        assert [(br.tag, br.token_ids, br.error) for br in x.branches] == \
            [(br.tag, br.token_ids, br.error) for br in y.branches], what
        for bx, by in zip(x.branches, y.branches):
            assert torch.equal(bx.logprobs, by.logprobs), what


BAD = {
    "empty": ([], "prompt {i} is empty"),
    "vocab": ([5, 6, VOCAB + 4, 7], f"token id {VOCAB + 4}, outside the vocabulary [0, {VOCAB})"),
    "negative": ([5, -1, 7], "token id -1, outside the vocabulary"),
    "context": ([5] * CONTEXT, "max_model_len"),
    "kv_cache": ([5] * 70, "the whole KV cache holds 16 blocks of 4 = 64 tokens"),
    "not_int": ([5, 6.5], "not an integer"),
}


def test_bad_prompts_fail_alone(model):
    good = [[3 + i, 10 + i, 20, 30 + i, 40][: 2 + i] for i in range(4)]
    params = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=12, n=2, seed=11, stop_token_ids=[])
    prompts, kinds = [], []
    for i, kind in enumerate(BAD):          # bad requests between good ones
        prompts.append(good[i % len(good)])
        kinds.append(None)
        prompts.append(BAD[kind][0])
        kinds.append(kind)
    gen = Engine(model, block_size=4, num_blocks=16).generate(prompts, params)
    alone = Engine(model, block_size=4, num_blocks=16).generate([p for p, k in zip(prompts, kinds) if k is None],
                                                                params)
    good_out = iter(alone.outputs)
    for i, (out, kind) in enumerate(zip(gen.outputs, kinds)):
        assert out.prompt_token_ids == prompts[i]
        if kind is None:
            _same(out, next(good_out), f"request {i}")
        else:
            assert out.outputs == [] and out.error is not None, kind
            assert BAD[kind][1].format(i=i) in out.error, (kind, out.error)
    assert gen.stats.generated_tokens == alone.stats.generated_tokens


def test_the_kv_cache_caps_a_long_generation(model):
    """A prompt that fits the cache but whose output would not: it stops at the cache's size ("length")."""
    out = Engine(model, block_size=4, num_blocks=16).generate(
        [[5] * 50], SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=[])).outputs[0]
    assert out.error is None and len(out.outputs[0].token_ids) == 64 - 50
    assert out.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("bad", ["past_end", "zero", "vocab", "too_long"])
def test_a_bad_fork_fails_alone(model, bad):
    prompts = [[3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14]]
    branch = SamplingParams(temperature=0.7, max_tokens=4, n=2, seed=5, stop_token_ids=[])

    def hook(with_bad):
        def fn(view):
            if len(view.output_token_ids) != 4:
                return None
            n = len(view.prompt_token_ids) + 4
            forks = [ForkRequest([20, 21], branch, tag="good", position=n - 1)]
            if with_bad and view.request_index == 1:
                cont, pos = {"past_end": ([20], n + 3), "zero": ([20], 0), "vocab": ([VOCAB], n),
                             "too_long": ([20] * CONTEXT, n)}[bad]
                forks.insert(0, ForkRequest(cont, branch, tag="bad", position=pos))
            return forks
        return fn

    params = SamplingParams(temperature=0.8, max_tokens=10, n=2, seed=3, stop_token_ids=[])
    gen = Engine(model, block_size=4, num_blocks=64).generate(prompts, params, hook=hook(True))
    ref = Engine(model, block_size=4, num_blocks=64).generate(prompts, params, hook=hook(False))
    for i, (a, b) in enumerate(zip(gen.outputs, ref.outputs)):
        if i != 1:
            _same(a, b, f"request {i}")
            continue
        for x, y in zip(a.outputs, b.outputs):
            assert x.token_ids == y.token_ids and torch.equal(x.logprobs, y.logprobs)
            failed, rest = x.branches[0], x.branches[1:]
            assert failed.tag == "bad" and failed.finish_reason == "error" and failed.token_ids == []
            want = {"past_end": "fork position", "zero": "fork position 0", "vocab": "outside the vocabulary",
                    "too_long": "max_model_len"}[bad]
            assert want in failed.error, failed.error
            assert [(r.tag, r.token_ids) for r in rest] == [(r.tag, r.token_ids) for r in y.branches]
            assert all(r.error is None for r in rest)
