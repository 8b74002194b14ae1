"""The engine against transformers on tiny random models of each family (fp32, built here, saved, reloaded).

Greedy outputs must be token-identical to transformers' generate; forked branches must equal fresh greedy runs on
(prefix + continuation); returned log-probs must equal the tempered log-softmax of a float64 forward; preemption
under a tiny block pool must not change any token.
"""
from __future__ import annotations

import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mrt.models import CausalLM  # noqa: E402
from mrt.rollout import Engine, ForkRequest, GenerationStats, SamplingParams  # noqa: E402
from tests.tiny_hf import unit_scale_weights_

VOCAB, EOS = 103, 2
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=1, tie_word_embeddings=False)),
}


def _hf_model(family: str):
    cfg_name, model_name, kw = FAMILIES[family]
    cfg = getattr(transformers, cfg_name)(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-6, eos_token_id=EOS, bos_token_id=1, **kw)
    return unit_scale_weights_(getattr(transformers, model_name)(cfg).eval())


@pytest.fixture(scope="module", params=list(FAMILIES))
def models(request, tmp_path_factory):
    """(transformers model, our CausalLM loaded from the saved folder) for one family."""
    torch.manual_seed(1234 + list(FAMILIES).index(request.param))
    hf = _hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return hf, CausalLM.from_pretrained(path, dtype=torch.float32)


def _hf_greedy(hf, prompt, max_new):
    """transformers' greedy continuation of one prompt, up to and including EOS."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=max_new, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _prompts(rng, n, shared_prefix=0):
    head = [rng.randrange(3, VOCAB) for _ in range(shared_prefix)]
    return [head + [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 21))] for _ in range(n)]


def _compare(got, want, what):
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{what}: first mismatch at output token {first}: got {got}, want {want}")


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_greedy_matches_transformers(models, prefix_caching, seed):
    hf, model = models
    rng = random.Random(seed)
    prompts = _prompts(rng, 3) + _prompts(rng, 3, shared_prefix=9)
    engine = Engine(model, block_size=4, num_blocks=64, enable_prefix_caching=prefix_caching,
                    max_num_batched_tokens=40)
    gen = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    for i, (p, o) in enumerate(zip(prompts, gen.outputs)):
        c = o.outputs[0]
        _compare(c.token_ids, _hf_greedy(hf, p, 12), f"prompt {i}")
        assert c.finish_reason == ("stop" if c.token_ids[-1] == EOS else "length")
    if prefix_caching:
        assert gen.stats.prompt_tokens_cached >= 8                  # the shared 9-token head, in full blocks of 4
    else:
        assert gen.stats.prompt_tokens_cached == 0
    assert gen.stats.prompt_tokens_computed + gen.stats.prompt_tokens_cached == sum(map(len, prompts))
    engine.block_manager.check_invariants([])                       # everything freed


def test_preemption_under_a_tiny_pool_gives_the_same_tokens(models, seed):
    hf, model = models
    rng = random.Random(seed)
    prompts = _prompts(rng, 6, shared_prefix=5)
    params = SamplingParams(temperature=0.0, max_tokens=16, stop_token_ids=[])
    big = Engine(model, block_size=4, num_blocks=128).generate(prompts, params)
    tiny = Engine(model, block_size=4, num_blocks=14)              # two or three sequences at a time
    small = tiny.generate(prompts, params)
    assert small.stats.preemptions > 0 and small.stats.recomputed_tokens > 0
    assert big.stats.preemptions == 0
    for i, (a, b) in enumerate(zip(small.outputs, big.outputs)):
        _compare(a.outputs[0].token_ids, b.outputs[0].token_ids, f"prompt {i}")
        assert a.outputs[0].logprobs.dtype == torch.float32 and a.outputs[0].logprobs.shape == (16,)
        torch.testing.assert_close(a.outputs[0].logprobs, b.outputs[0].logprobs, atol=1e-5, rtol=0)


def test_logprobs_equal_the_models_tempered_log_softmax(models, seed):
    hf, model = models
    rng = random.Random(seed)
    prompts = _prompts(rng, 3)
    T = 0.7
    engine = Engine(model, block_size=4, num_blocks=64)
    outs = engine.generate(prompts, SamplingParams(temperature=T, max_tokens=10, top_p=0.9, n=2, seed=seed)).outputs
    hf64 = _hf_model_copy(hf, torch.float64)
    for p, o in zip(prompts, outs):
        for c in o.outputs:
            ids = torch.tensor([p + c.token_ids])
            with torch.no_grad():
                ref = torch.log_softmax(hf64(ids).logits[0, len(p) - 1:-1] / T, -1)
                eager = torch.log_softmax(hf(ids).logits[0, len(p) - 1:-1].float() / T, -1)
            tok = torch.tensor(c.token_ids)[:, None]
            ref, eager = ref.gather(-1, tok)[:, 0], eager.gather(-1, tok)[:, 0].double()
            assert c.logprobs.dtype == torch.float32 and c.logprobs.shape == (len(c.token_ids),)
            got = c.logprobs.double()
            bound = 2 * (eager - ref).abs().max().item() + 1e-5
            err = (got - ref).abs()
            assert err.max() <= bound, f"log-prob error {err.max():.2e} > {bound:.2e} at tokens " \
                                       f"{torch.nonzero(err > bound).flatten().tolist()}"


def _hf_model_copy(hf, dtype):
    import copy
    return copy.deepcopy(hf).to(dtype)


def test_n_samples_share_the_prompt_and_seeds_reproduce(models, seed):
    _, model = models
    prompt = list(range(3, 22))                                    # 19 tokens: 4 full blocks of 4 + 3
    # A high temperature flattens the tiny model's (sometimes peaked) distribution, so the samples surely differ.
    params = SamplingParams(temperature=4.0, max_tokens=8, n=4, seed=seed, stop_token_ids=[])
    engine = Engine(model, block_size=4, num_blocks=64)
    gen = engine.generate([prompt], params)
    a = gen.outputs[0]
    assert gen.stats.prompt_tokens_computed == len(prompt)
    assert gen.stats.prompt_tokens_cached == 3 * len(prompt)
    assert [c.num_cached_tokens for c in a.outputs] == [0] + [len(prompt)] * 3
    # Run again, batched with other work: the prefix cache now serves sample 0 too, and the tokens are the same.
    b = engine.generate([[5, 6, 7], prompt], [SamplingParams(max_tokens=5), params]).outputs[1]
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    assert b.outputs[0].num_cached_tokens == 16
    assert len({tuple(c.token_ids) for c in a.outputs}) > 1, "the n samples should differ"


def test_forks_equal_fresh_greedy_runs(models, seed):
    hf, model = models
    rng = random.Random(seed)
    prompts = _prompts(rng, 3)
    cont = [[rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    branch = SamplingParams(temperature=0.0, max_tokens=5, n=2, stop_token_ids=[])

    def hook(view):
        n_out = len(view.output_token_ids)
        if n_out == 3:        # now, with the just-sampled token not yet computed
            return [ForkRequest(cont[view.request_index], branch, tag="now")]
        if n_out == 9:        # in the past, inside a block (prompt lengths vary, so any slot)
            return [ForkRequest(cont[view.request_index], branch, tag="past",
                                position=len(view.prompt_token_ids) + 6)]
        return None

    params = SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[])
    engine = Engine(model, block_size=4, num_blocks=96)
    gen = engine.generate(prompts, params, hook=hook)
    plain = Engine(model, block_size=4, num_blocks=96).generate(prompts, params)
    assert gen.stats.branches == 2 * 2 * len(prompts)
    assert gen.stats.cow_copies > 0
    for i, (p, o, q) in enumerate(zip(prompts, gen.outputs, plain.outputs)):
        c = o.outputs[0]
        _compare(c.token_ids, q.outputs[0].token_ids, f"parent {i} (forks must not change it)")
        tags = [b.tag for b in c.branches]
        assert tags == ["now", "now", "past", "past"]
        for b in c.branches:
            prefix = (p + c.token_ids)[:b.position]
            assert b.position == (len(p) + 3 if b.tag == "now" else len(p) + 6)
            want = _hf_greedy(hf, prefix + b.continuation_token_ids, 5)
            # transformers stops at EOS; the branches here do not (stop_token_ids=[]): compare up to it.
            assert len(want) == 5 or want[-1] == EOS
            _compare(b.token_ids[:len(want)], want, f"prompt {i} branch {b.tag}")
            assert b.finish_reason == "length" and b.logprobs.dtype == torch.float32 and b.logprobs.shape == (5,)
    engine.block_manager.check_invariants([])


def test_branch_stats_count_only_continuations_and_answers(models):
    _, model = models
    prompt = list(range(3, 40))
    t, m, a = 5, 3, 4
    branch = SamplingParams(temperature=0.0, max_tokens=a, n=m, stop_token_ids=[])

    def hook(view):
        if len(view.output_token_ids) in (4, 8):
            return [ForkRequest(list(range(50, 50 + t)), branch)]
        return None

    engine = Engine(model, block_size=4, num_blocks=128)
    st = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[]), hook=hook).stats
    # Each fork computes the parent's last sampled token + the t continuation tokens once; each of the m answers
    # then takes a - 1 decode steps (its first token comes from the continuation's logits).
    assert st.branch_prompt_tokens_computed == 2 * (t + 1)
    assert st.tokens_computed == len(prompt) + 9 + 2 * ((t + 1) + m * (a - 1))
    assert st.recomputed_tokens == 0 and st.branch_generated_tokens == 2 * m * a
    assert st.branches == 2 * m and st.generated_tokens == 10
    # The counters are the call's own: a second call starts from zero.
    again = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[]), hook=hook)
    assert again.stats.branches == st.branches and again.stats.generated_tokens == st.generated_tokens


def test_generation_stats_by_name():
    """The counters the trainer logs, by name (as_dict keeps the field order); stats of two calls add up."""
    st = GenerationStats(steps=2, preemptions=1) + GenerationStats(steps=3, branches=4)
    assert st.as_dict() == dict(prompt_tokens_computed=0, prompt_tokens_cached=0, generated_tokens=0,
                                branch_prompt_tokens_computed=0, branch_prompt_tokens_cached=0,
                                branch_generated_tokens=0, recomputed_tokens=0, tokens_computed=0, preemptions=1,
                                branches=4, cow_copies=0, steps=5)


def test_no_prompts_give_no_outputs_and_zero_counters(models):
    _, model = models
    gen = Engine(model, block_size=4, num_blocks=8).generate([], [])
    assert gen.outputs == [] and gen.stats == GenerationStats()


def test_too_long_prompt_fails_alone(models):
    _, model = models
    engine = Engine(model, block_size=4, num_blocks=64)
    bad = engine.generate([[5] * 128], SamplingParams(max_tokens=2)).outputs[0]
    assert bad.outputs == [] and "context" in bad.error
    out = engine.generate([[5] * 120], SamplingParams(temperature=0.0, max_tokens=50, stop_token_ids=[])).outputs
    assert len(out[0].outputs[0].token_ids) == 8 and out[0].outputs[0].finish_reason == "length"


class _LetterTokenizer:
    """Token i decodes to one letter: enough to test stop strings without a trained tokenizer."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_tokens_and_stop_strings(models, seed):
    _, model = models
    rng = random.Random(seed)
    prompt = _prompts(rng, 1)[0]
    engine = Engine(model, _LetterTokenizer(), block_size=4, num_blocks=64)
    free = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[])).outputs[0]
    toks = free.outputs[0].token_ids
    text = free.outputs[0].text
    assert text == _LetterTokenizer().decode(toks) and free.outputs[0].finish_reason == "length"
    # Stop on the 6th token's id (first occurrence), and on the string spelled by tokens 4..5.
    by_id = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10,
                                                     stop_token_ids=[toks[5]])).outputs[0]
    first = toks.index(toks[5])
    assert by_id.outputs[0].token_ids == toks[:first + 1] and by_id.outputs[0].finish_reason == "stop"
    stop = text[4:6]
    by_str = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=[],
                                                      stop_strings=[stop])).outputs[0].outputs[0]
    end = text.index(stop)
    assert by_str.finish_reason == "stop" and by_str.token_ids == toks[:end + 2]
    assert by_str.text == text[:end]
