"""The online segmenter's decode: transformers' own decode, or its Rust backend called directly where that is the
same function (a fast tokenizer that cleans up no spaces). The shortcut must give the same text on any ids, so the
boundaries (and so the meta-prover's forks) cannot move; everything else keeps tokenizer.decode."""
from __future__ import annotations

import copy
import random

from mrt.episodes import CharTracker, _decoder, markers_segmenter


def _windows(vocab: int, seed: int, n: int = 400):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(1, 8))] for _ in range(n)]


def test_fast_decoder_is_tokenizer_decode(qwen_tokenizer, tiny_tokenizer):
    for tok in (qwen_tokenizer, tiny_tokenizer):
        fast = _decoder(tok)
        assert fast != tok.decode, "the shortcut should apply to a fast tokenizer without space clean-up"
        # random ids: partial UTF-8 bytes (U+FFFD), special tokens, merges across window edges
        for ids in _windows(len(tok), seed=len(tok)) + [[tok.eos_token_id or 0], []]:
            assert fast(ids) == tok.decode(ids), ids


def test_other_tokenizers_keep_their_decode(tiny_tokenizer):
    class Plain:
        def decode(self, ids):
            return " ".join(map(str, ids))

    plain = Plain()
    assert _decoder(plain) == plain.decode
    tok = copy.copy(tiny_tokenizer)
    tok.clean_up_tokenization_spaces = True                  # transformers would edit the text: no shortcut
    assert _decoder(tok) == tok.decode
    assert not tiny_tokenizer.clean_up_tokenization_spaces   # the session's tokenizer untouched


def test_tracker_text_unchanged_by_the_shortcut(qwen_tokenizer):
    text = "".join(f"Step {i}: 3 × {i} = {3 * i} — ✓ 测试\n\n" + ("Wait, recheck.\n\n" if i % 5 == 0 else "")
                   for i in range(200))
    ids = qwen_tokenizer(text, add_special_tokens=False)["input_ids"]
    fast, slow = CharTracker(qwen_tokenizer), CharTracker(qwen_tokenizer)
    slow.decode = qwen_tokenizer.decode
    for i in range(0, len(ids), 3):
        fast.feed(ids[i:i + 3])
        slow.feed(ids[i:i + 3])
    assert fast.text == slow.text == text and fast.char_ends == slow.char_ends
    seg = markers_segmenter(["Wait"], 1, None)
    assert seg.boundaries(ids, qwen_tokenizer)                # boundaries found, through the shortcut
