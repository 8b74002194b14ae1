"""model.lora (mrt.models.lora, mrt.models.lora_files): low-rank adapters trained in place of the full model.

The adapted linear against its float64 definition; the adapted model starting as the base bit for bit; the engine's
log-probs (merged copy and adapters in the engine) against the training forward's (approx KL ~ 0 in fp32); the merge
rewriting the generation copy's weights in place (their storage kept, for CUDA graphs); the files in peft's format
(peft's PeftModel on the transformers model gives our logits, and the merged export loads in plain transformers);
Adam's state shrinking by full / LoRA trainable parameters; a 2-step LoRA run of the embedded default (frozen base,
trained adapters, checkpoint with the adapter, resume); one error line without peft.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mrt.config import ConfigError, LoraConfig  # noqa: E402
from mrt.models import CausalLM, packed_metadata, packed_positions  # noqa: E402
from mrt.models.lora import (LoraLinear, add_adapters, adam_state_bytes, check_available, lora_linears,  # noqa: E402
                             merge_into, merged_copy, trainable_parameters)
from mrt.models.lora_model import LoraModel, apply_lora  # noqa: E402
from mrt.rollout import Engine, SamplingParams  # noqa: E402
from tests.tiny_hf import unit_scale_weights_  # noqa: E402

VOCAB = 97
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random Qwen2 (q/k/v biases, untied lm-head) in a Hugging Face folder, unit-scale weights."""
    torch.manual_seed(7)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=128, tie_word_embeddings=False, eos_token_id=2)
    hf = unit_scale_weights_(transformers.Qwen2ForCausalLM(cfg).eval())
    path = tmp_path_factory.mktemp("qwen2")
    hf.save_pretrained(path)
    return str(path)


def _adapted(base_dir, r=4, alpha=8.0, targets=TARGETS, seed=0):
    """Our model with adapters whose B is random too (B = 0 would make every comparison with the base trivial)."""
    model = CausalLM.from_pretrained(base_dir)
    add_adapters(model, r, alpha, targets, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for lin in lora_linears(model).values():
            lin.lora_B.weight.copy_(torch.randn(lin.lora_B.weight.shape, generator=g) * 0.3)
    return model


def _forward_logprobs(model, seqs, starts, temperature):
    """Training forward (packed, grad on) of seqs -> the log-probs of each sequence's tokens from starts[i] on."""
    lens = [len(s) for s in seqs]
    ids = torch.tensor([t for s in seqs for t in s])
    hidden = model(ids, packed_positions(lens), packed_metadata(lens))
    logp = torch.log_softmax(model.compute_logits(hidden) / temperature, -1)
    out, off = [], 0
    for s, a in zip(seqs, starts):
        rows = torch.arange(off + a - 1, off + len(s) - 1)
        out.append(logp[rows, torch.tensor(s[a:])])
        off += len(s)
    return out


def test_adapted_linear_matches_its_float64_definition():
    torch.manual_seed(0)
    base = torch.nn.Linear(19, 23)
    lin = LoraLinear(base, r=3, alpha=6.0, dropout=0.0)
    lin.reset_adapter(torch.Generator().manual_seed(1))
    with torch.no_grad():
        lin.lora_B.weight.normal_()
    x = torch.randn(5, 19)
    d = {k: v.double() for k, v in dict(W=lin.weight, b=lin.bias, A=lin.lora_A.weight, B=lin.lora_B.weight).items()}
    ref = x.double() @ d["W"].T + d["b"] + 2.0 * (x.double() @ d["A"].T) @ d["B"].T
    eager = x @ lin.weight.T + lin.bias + 2.0 * (x @ lin.lora_A.weight.T) @ lin.lora_B.weight.T
    bound = 2 * (eager.double() - ref).abs().max().item() + 1e-6
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            err = (lin(x).double() - ref).abs().max().item()
        assert err <= bound, f"grad={grad}: error {err:.2e} > {bound:.2e}"
    # peft's init: A within +-1/sqrt(in), B zero
    lin.reset_adapter()
    assert lin.lora_A.weight.abs().max() <= 19 ** -0.5 and not lin.lora_B.weight.any()


def test_adapted_model_starts_as_the_base_bit_for_bit(base_dir):
    base = CausalLM.from_pretrained(base_dir)
    model = CausalLM.from_pretrained(base_dir)
    adapted = add_adapters(model, 8, 16.0, TARGETS, seed=3)
    assert len(adapted) == 2 * 7
    assert set(model.state_dict()) == set(base.state_dict()) | {f"{n}.lora_{x}.weight" for n in adapted
                                                                 for x in "AB"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {f"{n}.lora_{x}.weight" for n in adapted for x in "AB"}
    seqs = [[5, 9, 11, 40, 3], [7, 8]]
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            a, b = _forward_logprobs(model, seqs, [1, 1], 1.0), _forward_logprobs(base, seqs, [1, 1], 1.0)
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_no_lora_leaves_the_model_untouched(base_dir):
    model = CausalLM.from_pretrained(base_dir)
    assert apply_lora(model, LoraConfig(), base_dir) is None
    assert not lora_linears(model) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("generation", ["merged", "adapters"])
def test_engine_logprobs_agree_with_the_training_forward(base_dir, generation):
    model = _adapted(base_dir)
    gen_model = LoraModel(model, LoraConfig(r=4, alpha=8.0, generation=generation), base_dir).generation_model()
    assert (gen_model is model) == (generation == "adapters")
    T = 0.8
    prompts = [[5, 9, 11, 40], [7, 8, 3, 3, 60, 61, 62]]
    outs = Engine(gen_model, block_size=4, num_blocks=64).generate(
        prompts, SamplingParams(temperature=T, max_tokens=12, n=2, seed=5, stop_token_ids=[])).outputs
    seqs, starts, engine_lp = [], [], []
    for p, o in zip(prompts, outs):
        for c in o.outputs:
            seqs.append(p + c.token_ids)
            starts.append(len(p))
            engine_lp.append(c.logprobs)
    train_lp = [t.detach() for t in _forward_logprobs(model, seqs, starts, T)]
    base_lp = _forward_logprobs(CausalLM.from_pretrained(base_dir), seqs, starts, T)
    e, t, b = torch.cat(engine_lp), torch.cat(train_lp), torch.cat([x.detach() for x in base_lp])
    kl = (e - t).mean().abs().item()               # approx_kl_old, as the trainer logs it
    assert (e - t).abs().max() < 1e-4 and kl < 1e-5, f"engine vs training forward: max {(e - t).abs().max():.2e}"
    assert (e - b).abs().max() > 1e-2, "the adapters change nothing: the comparison above proves nothing"


def test_merge_rewrites_the_generation_copy_in_place(base_dir):
    model = _adapted(base_dir)
    gen, pairs = merged_copy(model)
    before = {n: t.data_ptr() for n, t in gen.state_dict().items()}
    own = model.state_dict()
    for n, t in gen.state_dict().items():     # frozen tensors shared, adapted weights apart
        adapted = n.removesuffix(".weight") in lora_linears(model)
        assert (t.data_ptr() == own[n].data_ptr()) != adapted, n
    with torch.no_grad():
        for lin in lora_linears(model).values():
            lin.lora_B.weight.mul_(-2.0)
    merge_into(pairs)
    after = gen.state_dict()
    assert {n: t.data_ptr() for n, t in after.items()} == before
    for name, lin in lora_linears(model).items():
        want = lin.weight.double() + lin.scaling * lin.lora_B.weight.double() @ lin.lora_A.weight.double()
        torch.testing.assert_close(after[f"{name}.weight"].double(), want, rtol=0, atol=1e-5)


def test_peft_loads_our_adapter_and_transformers_our_merged_export(base_dir, tmp_path):
    peft = pytest.importorskip("peft")
    from mrt.models.lora_files import ADAPTER_CONFIG, export_merged, load_adapted, save_adapter
    model = _adapted(base_dir, targets=["q_proj", "v_proj", "down_proj"])
    settings = LoraConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj", "down_proj"])
    save_adapter(model, str(tmp_path / "adapter"), settings, base_dir)
    cfg = json.load(open(tmp_path / "adapter" / ADAPTER_CONFIG))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    ids = torch.tensor([[5, 9, 11, 40, 3, 17, 88]])
    with torch.no_grad():
        ours = model.compute_logits(model(ids[0], packed_positions([7]), packed_metadata([7])))
        hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
        theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()(ids).logits[0]
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits[0]
    assert (ours - base).abs().max() > 1e-2
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    # merged: a plain folder, no peft needed to load it
    export_merged(str(tmp_path / "adapter"), str(tmp_path / "merged"))
    assert not os.path.exists(tmp_path / "merged" / ADAPTER_CONFIG)
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits[0]
    torch.testing.assert_close(merged, ours, rtol=1e-5, atol=1e-4)
    # and back: the adapter folder onto our base model
    again = load_adapted(str(tmp_path / "adapter"))
    for k, v in again.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_adam_state_shrinks_by_full_over_lora_parameters(base_dir):
    from mrt.config import OptimConfig
    from mrt.update import make_optimizer

    def one_step(model):
        opt = make_optimizer(model, OptimConfig())
        seqs = [[5, 9, 11, 40, 3]]
        (-_forward_logprobs(model, seqs, [1], 1.0)[0].sum()).backward()
        opt.step()
        return adam_state_bytes(opt), trainable_parameters(model)

    full_bytes, full_n = one_step(CausalLM.from_pretrained(base_dir))
    lora_model = CausalLM.from_pretrained(base_dir)
    adapted = add_adapters(lora_model, 4, 8.0, TARGETS)
    lora_bytes, lora_n = one_step(lora_model)
    assert lora_n == sum(4 * (lin.in_features + lin.out_features) for lin in adapted.values())
    assert full_bytes == 2 * 4 * full_n and lora_bytes == 2 * 4 * lora_n     # two fp32 moments a parameter
    assert full_bytes / lora_bytes == pytest.approx(full_n / lora_n) and full_bytes / lora_bytes > 3


def test_targets_that_match_nothing_name_the_linear_layers(base_dir):
    with pytest.raises(ConfigError, match=r"model.lora.target_modules: \['qkv'\] match no linear layer.*q_proj"):
        add_adapters(CausalLM.from_pretrained(base_dir), 4, 8.0, ["qkv"])
    with pytest.raises(ConfigError, match="model.lora.generation"):
        LoraConfig(r=4, generation="fused")


def test_missing_peft_is_one_error_line(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^model.lora.r: LoRA needs peft .*pip install peft") as exc:
        check_available(LoraConfig(r=8))
    assert "\n" not in str(exc.value)
    assert check_available(LoraConfig()) is False       # not asked for: peft is never looked up


@pytest.mark.parametrize("generation", ["merged", "adapters"])
def test_two_step_lora_run_trains_the_adapters_only(tmp_path, generation):
    pytest.importorskip("peft")
    from mrt.checkpoint import latest_checkpoint, verify
    from mrt.trainer import Trainer

    from .trainer_helpers import tiny_config
    cfg = tiny_config(tmp_path, "--model.lora.r", "8", "--model.lora.generation", generation,
                      "--model.lora.save_merged", "true")
    trainer = Trainer(cfg)
    frozen = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    out = trainer.train()
    steps = [r for r in out["records"] if r.get("kind") != "eval"]
    assert len(steps) == 2 and all(r["grad_norm"] > 0 for r in steps)
    # the engine generated with the adapted weights: step 2's traces came after step 1's update
    assert abs(steps[1]["approx_kl_old"]) < 1e-6, steps[1]["approx_kl_old"]     # stale weights: ~1e-4
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert any(lin.lora_B.weight.any() for lin in lora_linears(trainer.model).values())
    path = latest_checkpoint(cfg.checkpoint_dir)
    files = verify(path)["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "merged/model.safetensors"} <= set(files)
    assert "model.safetensors" not in files
    resumed = Trainer(tiny_config(tmp_path, "--model.lora.r", "8", "--model.lora.generation", generation))
    assert resumed.resume() and resumed.step == 2
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    if generation == "merged":     # the resumed generation copy holds the trained adapter merged
        for name, lin in lora_linears(resumed.model).items():
            torch.testing.assert_close(resumed.gen_model.get_submodule(name).weight,
                                       lin.weight + lin.delta_weight(), rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graphs_replay_the_merged_weights_after_an_update(base_dir):
    """Decode steps replayed from CUDA graphs read the weights at their captured addresses: after `sync` (a changed
    adapter merged in place) the replays must give the training forward's log-probs of the new adapter."""
    model = _adapted(base_dir).to("cuda")
    handle = LoraModel(model, LoraConfig(r=4, alpha=8.0), base_dir)
    engine = Engine(handle.generation_model(), block_size=4, num_blocks=64, cuda_graphs=True)
    prompts = [[5, 9, 11, 40], [7, 8, 3, 3, 60, 61, 62]]
    params = SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=5, stop_token_ids=[])
    engine.generate(prompts, params)                    # captures the decode graphs on the first weights
    with torch.no_grad():
        for lin in lora_linears(model).values():
            lin.lora_B.weight.mul_(-1.5)
    handle.sync()
    engine.reset_prefix_cache()
    outs = engine.generate(prompts, params).outputs
    seqs = [p + c.token_ids for p, o in zip(prompts, outs) for c in o.outputs]
    starts = [len(p) for p, o in zip(prompts, outs) for _ in o.outputs]
    engine_lp = torch.cat([c.logprobs.cpu() for o in outs for c in o.outputs])
    ids = [torch.tensor(s, device="cuda") for s in seqs]
    lens = [len(s) for s in seqs]
    with torch.no_grad():
        hidden = model(torch.cat(ids), packed_positions(lens, "cuda"), packed_metadata(lens, "cuda"))
        logp = torch.log_softmax(model.compute_logits(hidden), -1).cpu()
    rows, toks, off = [], [], 0
    for s, a in zip(seqs, starts):
        rows += list(range(off + a - 1, off + len(s) - 1))
        toks += s[a:]
        off += len(s)
    train_lp = logp[torch.tensor(rows), torch.tensor(toks)]
    assert (engine_lp - train_lp).abs().max() < 1e-3, (engine_lp - train_lp).abs().max()
