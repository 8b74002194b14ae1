"""mrt.models against transformers' own Llama / Qwen2 / Qwen3 models (tiny random configs, no download).

Tolerance comes from the dtype: our fp32 (bf16) logits may differ from transformers' float64 logits by at most twice
what transformers' own fp32 (bf16) model does, plus a tiny floor.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from mrt.hub import load_model  # noqa: E402
from mrt.models import (ArchConfig, CausalLM, CheckpointError, PagedMetadata, load_tokenizer,  # noqa: E402
                        packed_metadata, packed_positions)
from mrt.models.rope import inv_freq  # noqa: E402
from tests.tiny_hf import unit_scale_weights_

VOCAB = 103   # odd vocabulary
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               # head_dim 16, theta 1e4: wavelengths 6.3 (kept), 19.9 and 62.8 (interpolated), >= 199 (divided)
               "original_max_position_embeddings": 64}

# name -> (config class, model class, config kwargs)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2, rope_scaling=LLAMA3_ROPE)),
    "llama_bias_tied": ("LlamaConfig", "LlamaForCausalLM",
                        dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2_untied": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=1, tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=False)),
}


def make_hf_model(family: str, **overrides):
    cfg_name, model_name, kw = FAMILIES[family]
    kw = copy.deepcopy(dict(kw, **overrides))     # transformers writes rope_theta into the rope dict it is given
    cfg = getattr(transformers, cfg_name)(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6, eos_token_id=2, bos_token_id=1, **kw)
    return unit_scale_weights_(getattr(transformers, model_name)(cfg).eval())


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids[None], position_ids=torch.arange(len(ids))[None]).logits[0]


def report(name, got, ref, bound):
    err = (got.double() - ref.double()).abs()
    if err.max() > bound:
        idx = torch.nonzero(err > bound)[:5].tolist()
        print(f"{name}: max err {err.max():.3e} > bound {bound:.3e}; first mismatches at {idx}")
    return err.max().item()


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param


@pytest.fixture
def hf_folder(family, tmp_path, seed):
    model = make_hf_model(family)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def random_batch(lens):
    ids = torch.randint(0, VOCAB, (sum(lens),))
    return ids, packed_positions(lens), packed_metadata(lens)


# ---- logits vs transformers -----------------------------------------------------------------------------------------
def test_packed_logits_match_transformers(hf_folder):
    hf32, path = hf_folder
    lens = [1, 13, 37, 6]      # a single-token sequence, odd lengths, positions past llama3's 64/4 boundary
    ids, pos, meta = random_batch(lens)
    hf64 = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    ours32 = CausalLM.from_pretrained(path, dtype=torch.float32)
    ours64 = CausalLM.from_pretrained(path, dtype=torch.float64)
    with torch.no_grad():
        got32 = ours32.compute_logits(ours32(ids, pos, meta))
        got64 = ours64.compute_logits(ours64(ids, pos, meta)).double()
        # each sequence alone through our model gives the same rows as the packed batch
        alone = torch.cat([ours32.compute_logits(ours32(ids[a:b], pos[a:b], packed_metadata([b - a])))
                           for a, b in zip(meta.cu_seqlens[:-1].tolist(), meta.cu_seqlens[1:].tolist())])
    spans = list(zip(meta.cu_seqlens[:-1].tolist(), meta.cu_seqlens[1:].tolist()))
    ref64 = torch.cat([hf_logits(hf64, ids[a:b]).double() for a, b in spans])
    ref32 = torch.cat([hf_logits(hf32, ids[a:b]) for a, b in spans])
    assert got32.dtype == torch.float32 and got32.shape == (sum(lens), VOCAB)
    assert ref64.abs().max() > 1.0, "logits too small for the comparison to mean anything"
    hf_err = (ref32.double() - ref64).abs().max().item()
    bound = 2 * hf_err + 1e-6
    assert report("fp32 vs hf float64", got32, ref64, bound) <= bound
    # In float64 both models still round x to fp32 inside RMSNorm (transformers' order), so 1e-16 differences of
    # summation order can flip an fp32 rounding: they agree well within the fp32 error, not to 1e-16.
    assert report("float64 vs hf float64", got64, ref64, hf_err) <= hf_err
    assert report("alone vs packed", alone, got32, bound) <= bound


def test_bf16_logits_within_twice_transformers_error(seed, tmp_path):
    hf32 = make_hf_model("qwen2")
    hf32.save_pretrained(tmp_path)
    ids, pos, meta = random_batch([9, 20])
    hf64 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    hf16 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = CausalLM.from_pretrained(tmp_path, dtype="bfloat16")
    assert ours.dtype == torch.bfloat16
    spans = [(0, 9), (9, 29)]
    ref64 = torch.cat([hf_logits(hf64, ids[a:b]) for a, b in spans])
    ref16 = torch.cat([hf_logits(hf16, ids[a:b]).double() for a, b in spans])
    with torch.no_grad():
        got = ours.compute_logits(ours(ids, pos, meta))
    bound = 2 * (ref16 - ref64).abs().max().item() + 1e-3
    assert report("bf16 vs hf float64", got, ref64, bound) <= bound


# ---- config -------------------------------------------------------------------------------------------------------
def test_config_fields(hf_folder, family):
    hf, path = hf_folder
    c = ArchConfig.from_pretrained(path)
    hc = hf.config
    assert (c.architecture, c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == \
        (type(hf).__name__, VOCAB, 32, 2, 4, hc.num_key_value_heads, 16)
    assert c.tie_word_embeddings == hc.tie_word_embeddings
    assert c.eos_token_ids == [2]
    assert c.qk_norm == (family == "qwen3")
    assert c.qkv_bias == (family in ("qwen2", "qwen2_untied", "llama_bias_tied"))
    assert c.o_bias == (family == "llama_bias_tied")
    assert (c.rope_scaling is not None) == (family == "llama3_rope")


def test_legacy_rope_layout_parses_like_the_new_one():
    base = dict(architectures=["LlamaForCausalLM"], vocab_size=10, hidden_size=32, intermediate_size=8,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128)
    old = ArchConfig.from_hf_dict(dict(base, rope_theta=5e5, rope_scaling=dict(LLAMA3_ROPE)))
    new = ArchConfig.from_hf_dict(dict(base, rope_parameters=dict(LLAMA3_ROPE, rope_theta=5e5)))
    assert old.rope_theta == new.rope_theta == 5e5 and old.rope_scaling == new.rope_scaling
    assert old.head_dim == 16 and old.num_kv_heads == 2
    a, b = inv_freq(16, 5e5, old.rope_scaling), inv_freq(16, 5e5, None)
    assert a[0] == b[0] and a[-1] == b[-1] / 8    # highest frequency kept, lowest divided by the factor


def test_unknown_architecture_and_features_raise(tmp_path):
    hf = make_hf_model("llama")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, architectures=["GPT2LMHeadModel"])))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        CausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="yarn"):
        ArchConfig.from_hf_dict(dict(cfg, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}))
    with pytest.raises(ValueError, match="qk_norm=True"):
        ArchConfig(architecture="Qwen3ForCausalLM", vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                    num_heads=2, num_kv_heads=1, head_dim=4, max_position_embeddings=8)
    with pytest.raises(ValueError, match="gelu"):
        ArchConfig.from_hf_dict(dict(cfg, hidden_act="gelu"))


# ---- loader -------------------------------------------------------------------------------------------------------
def test_sharded_checkpoints_load(tmp_path, seed):
    hf = make_hf_model("qwen3")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="10KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    model = load_model(tmp_path / "hf")
    ours_shards = tmp_path / "ours"
    model.save_pretrained(ours_shards, max_shard_size=8_000)
    index = json.loads((ours_shards / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    again = CausalLM.from_pretrained(ours_shards)
    ids, pos, meta = random_batch([11, 4])
    with torch.no_grad():
        a = model.compute_logits(model(ids, pos, meta))
        b = again.compute_logits(again(ids, pos, meta))
    ref = torch.cat([hf_logits(hf, ids[:11]), hf_logits(hf, ids[11:])])
    assert torch.equal(a, b)
    assert report("sharded vs hf", a, ref, 1e-5) <= 1e-5


def _rewrite(path, edit):
    f = os.path.join(path, "model.safetensors")
    state = load_file(f)
    edit(state)
    save_file(state, f, metadata={"format": "pt"})


def test_missing_unexpected_and_wrong_shape_tensors_raise_naming_them(tmp_path):
    make_hf_model("llama").save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight"):
        CausalLM.from_pretrained(tmp_path)
    make_hf_model("llama").save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.__setitem__("model.layers.0.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: model\.layers\.0\.extra\.weight"):
        CausalLM.from_pretrained(tmp_path)
    make_hf_model("llama").save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.__setitem__("model.norm.weight", torch.ones(31)))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight: checkpoint \(31,\) vs model \(32,\)"):
        CausalLM.from_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        CausalLM.from_pretrained(tmp_path)


def test_tied_checkpoint_with_a_stored_lm_head_loads(tmp_path, seed):
    hf = make_hf_model("qwen2")     # tied
    hf.save_pretrained(tmp_path)
    _rewrite(tmp_path, lambda s: s.__setitem__("lm_head.weight", s["model.embed_tokens.weight"].clone()))
    model = CausalLM.from_pretrained(tmp_path)
    assert model.lm_head is None and model.lm_head_weight is model.model.embed_tokens.weight
    ids = torch.randint(0, VOCAB, (9,))
    with torch.no_grad():
        got = model.compute_logits(model(ids, torch.arange(9), packed_metadata([9])))
    assert report("tied", got, hf_logits(hf, ids), 1e-5) <= 1e-5


def test_dtype_and_device_arguments(tmp_path):
    make_hf_model("qwen2_untied").save_pretrained(tmp_path)
    m = CausalLM.from_pretrained(tmp_path, dtype=torch.float16, device="cpu")
    assert all(p.dtype == torch.float16 and p.device.type == "cpu" for p in m.parameters())
    assert CausalLM.from_pretrained(tmp_path, dtype="auto").dtype == torch.float32   # config.json says float32
    with pytest.raises(ValueError, match="float8"):
        CausalLM.from_pretrained(tmp_path, dtype="float8")


def test_save_pretrained_round_trip_loads_in_transformers(hf_folder, tmp_path):
    hf, path = hf_folder
    ours = CausalLM.from_pretrained(path)
    ours.save_pretrained(tmp_path / "saved")
    names = set(load_file(tmp_path / "saved" / "model.safetensors"))
    assert ("lm_head.weight" in names) == (not hf.config.tie_word_embeddings)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert type(back) is type(hf)
    ids = torch.randint(0, VOCAB, (21,))
    assert torch.equal(hf_logits(back, ids), hf_logits(hf, ids))
    if hf.config.tie_word_embeddings:
        assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("arch,extra", [("LlamaForCausalLM", dict(rope_scaling=dict(LLAMA3_ROPE), qkv_bias=True,
                                                                            o_bias=True, mlp_bias=True)),
                                        ("Qwen2ForCausalLM", dict(qkv_bias=True, tie_word_embeddings=True)),
                                        ("Qwen3ForCausalLM", dict(qk_norm=True))])
def test_model_built_from_config_saves_for_transformers(arch, extra, tmp_path, seed):
    config = ArchConfig(architecture=arch, vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128, eos_token_ids=[5, 7],
                        **extra)
    model = CausalLM.from_config(config, std=0.3, generator=torch.Generator().manual_seed(seed))
    model.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == arch and hf.config.eos_token_id == [5, 7]
    assert ArchConfig.from_pretrained(tmp_path).to_dict() == dict(config.to_dict(), torch_dtype="float32")
    ids = torch.randint(0, VOCAB, (45,))    # past original_max_position_embeddings / high_freq_factor
    with torch.no_grad():
        got = model.compute_logits(model(ids, torch.arange(45), packed_metadata([45])))
    ref = hf_logits(hf, ids)
    bound = 1e-5 * ref.abs().max().item()
    assert report(f"{arch} from config", got, ref, bound) <= bound


# ---- training mode: gradients with activation checkpointing ------------------------------------------------------
def test_gradients_flow_with_checkpointing(tmp_path, seed):
    make_hf_model("qwen3").save_pretrained(tmp_path)
    lens = [7, 12, 1]
    ids, pos, meta = random_batch(lens)
    targets = torch.randint(0, VOCAB, ids.shape)
    grads = []
    for ckpt in (False, True):
        model = CausalLM.from_pretrained(tmp_path).train()
        model.gradient_checkpointing = ckpt
        hidden = model(ids, pos, meta)
        logp = torch.log_softmax(model.compute_logits(hidden), -1).gather(1, targets[:, None])
        (-logp.mean()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[1].items():
        assert g is not None and torch.isfinite(g).all() and g.abs().max() > 0, f"no gradient for {name}"
        ref = grads[0][name]
        assert torch.allclose(g, ref, rtol=1e-5, atol=1e-7), f"{name}: {(g - ref).abs().max():.3e}"


def test_training_call_with_fused_logprobs(tmp_path, seed):
    """The trainer's call: packed hidden states + lm_head_weight (tied: the embedding) into the fused kernel."""
    try:
        from mrt_kernels.fused_linear_logprobs import fused_linear_logprobs
    except ImportError as exc:
        pytest.skip(f"fused_linear_logprobs not importable ({exc})")
    make_hf_model("qwen2").save_pretrained(tmp_path)
    ids, pos, meta = random_batch([5, 16])
    targets = torch.randint(0, VOCAB, ids.shape)
    grads = []
    for fused in (False, True):
        model = CausalLM.from_pretrained(tmp_path).train()
        model.gradient_checkpointing = True
        hidden = model(ids, pos, meta)
        if fused:
            logp = fused_linear_logprobs(hidden, model.lm_head_weight, targets)
        else:
            logp = torch.log_softmax(model.compute_logits(hidden), -1).gather(1, targets[:, None])[:, 0]
        logp.sum().backward()
        grads.append((logp.detach(), model.model.embed_tokens.weight.grad))
    assert torch.allclose(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-5), (grads[1][1] - grads[0][1]).abs().max()


# ---- generation mode: paged KV cache -------------------------------------------------------------------------------
def _local_store_kv(key, value, k_cache, v_cache, slot_mapping, *, backend=None, check=True):
    bs = k_cache.shape[1]
    k_cache[slot_mapping // bs, slot_mapping % bs] = key
    v_cache[slot_mapping // bs, slot_mapping % bs] = value


def _local_paged_attention(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q,
                           max_context_len, *, scale, backend=None, check=True):
    """float64 gather + causal softmax; the definition the kernels package implements."""
    bs, g = k_cache.shape[1], q.shape[1] // k_cache.shape[2]
    out = torch.empty_like(q)
    for b in range(len(context_lens)):
        a, e, ctx = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(context_lens[b])
        slots = block_tables[b, torch.arange(ctx) // bs].long() * bs + torch.arange(ctx) % bs
        k = k_cache.flatten(0, 1)[slots].double().repeat_interleave(g, dim=1)   # (ctx, Hq, D)
        v = v_cache.flatten(0, 1)[slots].double().repeat_interleave(g, dim=1)
        qpos = torch.arange(ctx - (e - a), ctx)
        s = torch.einsum("qhd,khd->hqk", q[a:e].double(), k) * scale
        s = s.masked_fill(torch.arange(ctx)[None, None, :] > qpos[None, :, None], float("-inf"))
        out[a:e] = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).to(q.dtype)
    return out


@pytest.fixture(params=["kernels", "kernels-triton", "local"])
def paged_ops(request, monkeypatch):
    """'kernels': mrt_kernels' own store_kv / paged_attention (auto backend; '-triton': the Triton kernels, under the
    interpreter here); 'local': the float64 gather above, which checks the model's plumbing alone."""
    if request.param.startswith("kernels"):
        try:
            import mrt_kernels.kv_cache  # noqa: F401
            import mrt_kernels.paged_attention  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"kernels package has no paged ops yet ({exc})")
        if request.param == "kernels-triton":
            from mrt_kernels._backend import triton_error
            if triton_error() is not None:
                pytest.skip(triton_error())
            monkeypatch.setenv("MRT_KERNELS_BACKEND", "triton")
        return request.param
    monkeypatch.setitem(sys.modules, "mrt_kernels.kv_cache", types.SimpleNamespace(store_kv=_local_store_kv))
    monkeypatch.setitem(sys.modules, "mrt_kernels.paged_attention",
                        types.SimpleNamespace(paged_attention=_local_paged_attention))
    return request.param


@pytest.mark.parametrize("fam", ["llama3_rope", "qwen2", "qwen3"])
def test_paged_mode_matches_packed_mode(fam, paged_ops, tmp_path, seed):
    make_hf_model(fam).save_pretrained(tmp_path)
    model = CausalLM.from_pretrained(tmp_path)
    block_size, num_blocks = 4, 40
    chunks = [[5, 9, 3], [4, 2, 6]]          # two prefill chunks per sequence (prefixes end inside blocks)
    decode_steps = 3
    total = [sum(c[b] for c in chunks) + decode_steps for b in range(3)]
    seqs = [torch.randint(0, VOCAB, (n,)) for n in total]
    with torch.no_grad():
        full = model(torch.cat(seqs), packed_positions(total), packed_metadata(total))
    starts = [0] + torch.tensor(total).cumsum(0).tolist()[:-1]

    # Scattered blocks: each sequence gets random distinct blocks in random order.
    max_blocks = -(-max(total) // block_size)
    block_tables = torch.randperm(num_blocks)[:3 * max_blocks].view(3, max_blocks).to(torch.int32)
    kv_cache = model.new_kv_cache(num_blocks, block_size)
    kv_cache.normal_()     # stale garbage everywhere: only written slots may be read
    done = [0, 0, 0]
    steps = chunks + [[1, 1, 1]] * decode_steps
    for new in steps:
        ids, pos, slots, want = [], [], [], []
        for b, n in enumerate(new):
            p = torch.arange(done[b], done[b] + n)
            ids.append(seqs[b][p])
            pos.append(p)
            slots.append(block_tables[b, p // block_size].long() * block_size + p % block_size)
            want.append(full[starts[b] + p])
            done[b] += n
        cu = torch.tensor([0] + torch.tensor(new).cumsum(0).tolist(), dtype=torch.int32)
        meta = PagedMetadata(cu_seqlens_q=cu, context_lens=torch.tensor(done, dtype=torch.int32),
                             block_tables=block_tables, slot_mapping=torch.cat(slots), max_seqlen_q=max(new),
                             max_context_len=max(done), block_size=block_size)
        with torch.no_grad():
            got = model(torch.cat(ids), torch.cat(pos), meta, kv_cache)
        want = torch.cat(want)
        # Packed and paged are two fp32 evaluations of the same sums: bound by the fp32 rounding of the hidden size.
        bound = 1e-4 * want.abs().max().item()
        assert report(f"paged step {new}", got, want, bound) <= bound
        lg, lw = model.compute_logits(got), model.compute_logits(want)
        assert report("paged logits", lg, lw, 1e-4 * lw.abs().max().item()) <= 1e-4 * lw.abs().max().item()


def test_mode_argument_errors(tmp_path):
    make_hf_model("qwen2").save_pretrained(tmp_path)
    model = CausalLM.from_pretrained(tmp_path)
    ids, pos, meta = random_batch([3, 4])
    with pytest.raises(ValueError, match="kv_cache must be None"):
        model(ids, pos, meta, model.new_kv_cache(2, 4))
    paged = PagedMetadata(cu_seqlens_q=meta.cu_seqlens, context_lens=torch.tensor([3, 4], dtype=torch.int32),
                          block_tables=torch.zeros(2, 1, dtype=torch.int32), slot_mapping=torch.arange(7),
                          max_seqlen_q=4, max_context_len=4, block_size=4)
    with pytest.raises(ValueError, match="kv_cache is required"):
        model(ids, pos, paged)
    with pytest.raises(ValueError, match="num_kv_heads"):
        model(ids, pos, paged, torch.zeros(2, 2, 4, 4, 3, 16))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(ids, pos, packed_metadata([3, 3]))


# ---- tokenizer ------------------------------------------------------------------------------------------------------
def test_load_tokenizer_round_trip(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["the answer is 42", "wait, let me check: 6 * 7 = 42"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    fast.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "wait, the answer is 42"
    assert loaded.decode(loaded.encode(text)) == text
    assert loaded.eos_token == "<eos>"
