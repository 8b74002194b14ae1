import os
import random

import numpy as np
import pytest
import torch

import mrt.checkpoint
from mrt.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from mrt.config import Config


def _tiny_llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg)


def _setup(tok):
    model = _tiny_llama(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _train_step(model, opt, sched):
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_round_trip_and_transformers_load(tmp_path, tiny_tokenizer, seed):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, opt, sched = _setup(tiny_tokenizer)
    _train_step(model, opt, sched)
    random.seed(seed)
    path = save_checkpoint(str(tmp_path), 5, model, tokenizer=tiny_tokenizer, optimizer=opt, scheduler=sched,
                           config=Config(), extra={"consumed": 40})
    assert os.path.basename(path) == "step_00000005"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "optimizer.safetensors",
              "mrt_config.yaml", "manifest.json"):
        assert os.path.isfile(os.path.join(path, f)), f
    draws = (random.random(), np.random.rand(), torch.rand(3))

    # transformers loads the folder as is, with identical logits.
    hf = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tok("Question : 1 + 2\nAnswer :\n", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, rtol=0, atol=0)

    # A fresh model/optimizer/scheduler restored from it continues identically (same RNG draws too).
    model2, opt2, sched2 = _setup(tiny_tokenizer)
    state = load_checkpoint(path, model2, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 5 and state["extra"] == {"consumed": 40}
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(3), draws[2])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(seed)
    _train_step(model, opt, sched)
    torch.manual_seed(seed)
    _train_step(model2, opt2, sched2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_keep_last_n(tmp_path, tiny_tokenizer):
    model, opt, sched = _setup(tiny_tokenizer)
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(str(tmp_path), step, model, optimizer=opt, keep_last=2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [4, 5]
    assert sorted(os.listdir(tmp_path)) == ["step_00000004", "step_00000005"]
    assert latest_checkpoint(str(tmp_path)).endswith("step_00000005")
    assert latest_checkpoint(str(tmp_path / "none")) is None


def test_crash_mid_write_keeps_last_good(tmp_path, tiny_tokenizer, monkeypatch):
    model, opt, sched = _setup(tiny_tokenizer)
    good = save_checkpoint(str(tmp_path), 1, model, optimizer=opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model, opt, sched)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(mrt.checkpoint, "write_manifest", killed)     # dies after every file but the manifest
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 2, model, optimizer=opt, keep_last=1)
    monkeypatch.undo()
    assert latest_checkpoint(str(tmp_path)) == good
    assert any(n.startswith(".tmp-") for n in os.listdir(tmp_path))     # the partial folder, never a step folder
    fresh, _, _ = _setup(tiny_tokenizer)
    assert load_checkpoint(good, fresh)["step"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k]), k
    # A step folder without manifest.json (e.g. copied by hand, half done) is not taken either.
    os.makedirs(tmp_path / "step_00000009")
    assert latest_checkpoint(str(tmp_path)) == good
    # The next save clears the partial folder.
    save_checkpoint(str(tmp_path), 3, model, optimizer=opt)
    assert not any(n.startswith(".tmp-") for n in os.listdir(tmp_path))
    assert latest_checkpoint(str(tmp_path)).endswith("step_00000003")


def test_mismatched_model_raises(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    model, _, _ = _setup(tiny_tokenizer)
    path = save_checkpoint(str(tmp_path), 1, model)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True))
    with pytest.raises(RuntimeError, match="does not match"):
        load_checkpoint(path, other)
