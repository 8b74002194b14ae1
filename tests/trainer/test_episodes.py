import random

import pytest

from mrt.config import EpisodesConfig
from mrt.episodes import (R1_MARKERS, SEGMENTERS, backtrack_segmenter, fixed_segmenter, make_segmenter,
                          markers_segmenter, token_char_ends)


def _online(seg, tok, ids, rng):
    s, got, i = seg.stream(tok), [], 0
    while i < len(ids):
        k = rng.randint(1, 5)
        got += s.feed(ids[i:i + k])
        i += k
    got += s.finish()
    assert got == s.boundaries
    return got


def _paragraphs(rng, n):
    words = ["Let", "me", "compute", "x", "=", "3", "so", "Waiting", "wait", "Butter", "é", "中文", "∑", "\\frac{1}{2}"]
    out = []
    for _ in range(n):
        r = rng.random()
        head = rng.choice(R1_MARKERS) + rng.choice([",", " ", "!", ""]) if r < 0.35 else ""
        out.append(head + " ".join(rng.choice(words) for _ in range(rng.randint(1, 8))))
    return out


def test_markers_rules_on_text():
    text = "A.\n\nWait, one.\n\nB.\n\nWaiting is not a marker.\n\nBut wait x\n\n  Alternatively y\n\nWait"
    seg = markers_segmenter(R1_MARKERS, min_paragraphs=1)
    starts = seg.text_boundaries(text)
    assert [text[s:s + 6] for s in starts] == ["Wait, ", "But wa", "Altern", "Wait"]
    # min_paragraphs=2: "Wait, one" is paragraph 1 (< 2 after the start), "But wait" is 4, "Alternatively" 5 (< 2
    # after 4), the last "Wait" 6.
    starts = markers_segmenter(R1_MARKERS, min_paragraphs=2).text_boundaries(text)
    assert [text[s:s + 6] for s in starts] == ["But wa", "Wait"]
    starts = markers_segmenter(R1_MARKERS, min_paragraphs=1, max_episodes=3).text_boundaries(text)
    assert len(starts) == 2
    t2 = "A\n\nWait 1\n\n</think>\n\nWait 2"
    assert len(markers_segmenter(["Wait"], 1, end_text="</think>").text_boundaries(t2)) == 1
    assert len(markers_segmenter(["Wait"], 1).text_boundaries(t2)) == 2


def test_boundary_is_token_count_before_the_paragraph(qwen_tokenizer):
    text = "<think>\nFirst.\n\nSecond.\n\nWait, third.\n\nFourth."
    ids = qwen_tokenizer(text)["input_ids"]
    [b] = markers_segmenter(["Wait"], 1).boundaries(ids, qwen_tokenizer)
    assert qwen_tokenizer.decode(ids[:b]) == "<think>\nFirst.\n\nSecond.\n\n"
    assert qwen_tokenizer.decode(ids[b:]).startswith("Wait")


@pytest.mark.parametrize("min_paragraphs, max_episodes", [(1, None), (3, None), (2, 3)])
def test_online_matches_offline_qwen(qwen_tokenizer, seed, min_paragraphs, max_episodes):
    rng = random.Random(seed)
    seg = markers_segmenter(R1_MARKERS, min_paragraphs, max_episodes, end_text="</think>")
    found = 0
    for _ in range(25):
        paras = _paragraphs(rng, rng.randint(1, 12))
        if rng.random() < 0.3:
            paras.insert(rng.randint(0, len(paras)), "</think>")
        sep = rng.choice(["\n\n", "\n \n", "\n\n\n"])
        text = sep.join(paras)
        ids = qwen_tokenizer(text)["input_ids"]
        off = seg.boundaries(ids, qwen_tokenizer)
        on = _online(seg, qwen_tokenizer, ids, rng)
        if on != off:
            print("text:", repr(text), "\noffline:", off, "\nonline:", on)
        assert on == off
        found += len(off)
        # Each boundary's tokens decode to a text that ends before a marker paragraph.
        for b in off:
            rest = qwen_tokenizer.decode(ids[b:]).lstrip()
            assert any(rest.startswith(m) for m in R1_MARKERS), repr(rest[:30])
    assert found > 0


def test_online_matches_offline_tiny(tiny_tokenizer, seed):
    from mrt.tasks import arithmetic as task
    rng = random.Random(seed)
    seg = make_segmenter(EpisodesConfig(markers=["Wait"], min_paragraphs=1, max_episodes=4))
    total = 0
    for p in task.generate_problems(30, seed=seed % 997):
        ids = tiny_tokenizer(task.reference_trace(p, rng, p_error=0.7), add_special_tokens=False)["input_ids"]
        off = seg.boundaries(ids, tiny_tokenizer)
        assert _online(seg, tiny_tokenizer, ids, rng) == off
        total += len(off)
        for b in off:   # the fork point is right after the blank line, where the termination text goes
            assert tiny_tokenizer.decode(ids[:b]).endswith(" .\n\n")
    assert total > 0


def test_online_reports_early(tiny_tokenizer):
    # The boundary is known once "Wait" and the next character are there, long before the trace ends.
    text = "1 + 2 = 3 .\nSo the answer is 3 .\n\nWait , 1 + 2 = 3 .\nSo the answer is 3 .\n\nThe answer is \\boxed{3} ."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    s = markers_segmenter(["Wait"], 1).stream(tiny_tokenizer)
    for i, t in enumerate(ids):
        got = s.feed([t])
        if got:
            assert tiny_tokenizer.decode(ids[:i + 1]).endswith("\n\nWait ,")
            assert tiny_tokenizer.decode(ids[:got[0]]).endswith("3 .\n\n")
            break
    else:
        pytest.fail("no boundary reported online")


def test_backtrack(qwen_tokenizer, seed):
    rng = random.Random(seed)
    seg = backtrack_segmenter()
    text = "Line 1: a\nLine 2: b\nBacktrack to Line 1\nLine 2: c\nBacktrack to beginning\nx Backtrack to Line 3\nBacktrack to Line 12 now"
    starts = seg.text_boundaries(text)
    assert [text[s:s + 21] for s in starts] == ["Backtrack to Line 1\nL", "Backtrack to beginnin",
                                                 "Backtrack to Line 12 "]
    ids = qwen_tokenizer(text)["input_ids"]
    off = seg.boundaries(ids, qwen_tokenizer)
    assert len(off) == 3 and _online(seg, qwen_tokenizer, ids, rng) == off
    assert backtrack_segmenter(max_episodes=2).boundaries(ids, qwen_tokenizer) == off[:1]


@pytest.mark.parametrize("n, chunk, max_episodes, want", [
    (10, 4, None, [4, 8]), (8, 4, None, [4]), (3, 4, None, []), (20, 4, 3, [4, 8]), (1, 1, None, [])])
def test_fixed(n, chunk, max_episodes, want, seed):
    seg = fixed_segmenter(chunk, max_episodes)
    ids = list(range(n))
    assert seg.boundaries(ids) == want
    assert _online(seg, None, ids, random.Random(seed)) == want


def test_registry_and_errors():
    assert set(SEGMENTERS) == {"markers", "backtrack", "fixed"}
    assert make_segmenter(EpisodesConfig(segmenter="fixed", chunk_tokens=5)).boundaries(list(range(11))) == [5, 10]
    with pytest.raises(ValueError, match="markers"):
        markers_segmenter([])
    with pytest.raises(ValueError, match="chunk_tokens"):
        fixed_segmenter(0)


def test_char_ends_multibyte(qwen_tokenizer):
    text = "é 中文 ∑ 😀 ok"
    ids = qwen_tokenizer(text)["input_ids"]
    decoded, ends = token_char_ends(ids, qwen_tokenizer)
    assert decoded == text and len(ends) == len(ids) and ends[-1] == len(text)
    assert ends == sorted(ends)


def test_r1_presets_use_the_r1_markers():
    """The R1 presets' markers are R1_MARKERS (a preset that drifts from the constant fails here)."""
    import glob
    import os

    import yaml
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")
    presets = sorted(glob.glob(os.path.join(root, "deepscaler_*.yaml")) + glob.glob(os.path.join(root, "r1_*.yaml")))
    assert presets
    for path in presets:
        with open(path, encoding="utf-8") as f:
            assert yaml.safe_load(f)["episodes"]["markers"] == list(R1_MARKERS), path
