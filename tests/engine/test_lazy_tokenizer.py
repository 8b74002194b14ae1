"""Engine.from_pretrained on model folders with and without tokenizer files: the tokenizer loads on first use.

Token-id prompts need no tokenizer: a Llama or Qwen2 folder holding only config.json and weights must generate the
same tokens as transformers. Text (an output's `.text`, stop strings) needs one: then a clear error, naming the
folder; with tokenizer files present, decoding equals the tokenizer's own.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mrt.models import LazyTokenizer, MissingTokenizerError  # noqa: E402
from mrt.rollout import Engine, SamplingParams  # noqa: E402
from tests.tiny_hf import unit_scale_weights_  # noqa: E402

VOCAB = 300


def _save_model(family: str, path) -> torch.nn.Module:
    cfg = getattr(transformers, f"{family}Config")(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, eos_token_id=0, bos_token_id=1)
    torch.manual_seed(3)
    hf = unit_scale_weights_(getattr(transformers, f"{family}ForCausalLM")(cfg).eval())
    hf.save_pretrained(path)
    return hf


def _save_tokenizer(path) -> None:
    """A byte-level BPE of at most VOCAB tokens, trained in memory and saved in the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["the answer is 42", "wait, let me check: 6 * 7 = 42"] * 20,
                            trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(path)


@pytest.mark.parametrize("family", ["Llama", "Qwen2"])
def test_a_folder_without_tokenizer_files_generates_from_ids(family, tmp_path):
    hf = _save_model(family, tmp_path)
    engine = Engine.from_pretrained(tmp_path, block_size=4, num_blocks=32)
    prompt = [5, 17, 33, 8, 91]
    out = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8,
                                                   stop_token_ids=[])).outputs[0].outputs[0]
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 5, dtype=torch.long),
                           max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)[0, 5:].tolist()
    assert out.token_ids == want
    with pytest.raises(MissingTokenizerError, match="no tokenizer files"):
        out.text
    with pytest.raises(MissingTokenizerError, match="no tokenizer files"):
        engine.generate([prompt], SamplingParams(max_tokens=4, stop_strings=["42"]))


def test_tokenizer_files_are_loaded_on_first_use_only(tmp_path):
    _save_model("Llama", tmp_path)
    _save_tokenizer(tmp_path)
    engine = Engine.from_pretrained(tmp_path, block_size=4, num_blocks=32)
    assert isinstance(engine.tokenizer, LazyTokenizer) and not engine.tokenizer.is_loaded
    out = engine.generate([[5, 17, 33]], SamplingParams(temperature=0.0, max_tokens=6, stop_token_ids=[]))
    assert not engine.tokenizer.is_loaded                   # token ids in, token ids out: nothing decoded
    comp = out.outputs[0].outputs[0]
    want = transformers.AutoTokenizer.from_pretrained(tmp_path).decode(comp.token_ids, skip_special_tokens=True)
    assert comp.text == want and engine.tokenizer.is_loaded
    assert engine.tokenizer("the answer")["input_ids"] == engine.tokenizer.load()("the answer")["input_ids"]


def test_an_engine_without_a_tokenizer_says_so_when_text_is_needed(tmp_path):
    _save_model("Qwen2", tmp_path)
    engine = Engine.from_pretrained(tmp_path, block_size=4, num_blocks=32)
    engine.tokenizer = None
    comp = engine.generate([[7, 8]], SamplingParams(max_tokens=2)).outputs[0].outputs[0]
    assert len(comp.token_ids) >= 1
    with pytest.raises(MissingTokenizerError, match="this engine has none"):
        comp.text
