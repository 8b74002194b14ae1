import random

import pytest

from mrt.episodes import markers_segmenter
from mrt.tasks import arithmetic as task


def test_deterministic_and_disjoint():
    a = task.generate_problems(300, seed=3)
    assert [p.text for p in a] == [p.text for p in task.generate_problems(300, seed=3)]
    assert [p.text for p in a] != [p.text for p in task.generate_problems(300, seed=4)]
    held = task.generate_problems(200, seed=3, split="heldout")
    train = {p.text for s in range(3) for p in task.generate_problems(500, seed=s)}
    assert not train & {p.text for p in held}
    assert all(task.split_of(p.text) == "heldout" for p in held)
    with pytest.raises(ValueError, match="split"):
        task.generate_problems(1, split="test")


def test_values_in_range_and_answer():
    for p in task.generate_problems(500, seed=1):
        v = p.start
        for op, n in p.ops:
            v = v + n if op == "+" else v - n
            assert 0 <= v <= task.MAX_VALUE and 1 <= n <= task.MAX_OPERAND
        assert v == p.answer and 3 <= len(p.ops) <= 5


def test_reference_traces_verify_and_have_episodes(seed, tiny_tokenizer):
    rng = random.Random(seed)
    seg = markers_segmenter(["Wait"], min_paragraphs=1)
    n_wait = 0
    for p in task.generate_problems(200, seed=seed % 1000):
        tr = task.reference_trace(p, rng)
        assert task.verify(tr, p.answer) == 1.0, tr
        assert task.verify(tr, p.answer + 1) == 0.0
        ids = tiny_tokenizer(tr, add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.unk_token_id not in ids and tiny_tokenizer.decode(ids) == tr
        assert 20 <= len(ids) <= 120
        b = seg.boundaries(ids, tiny_tokenizer)
        n_wait += len(b)
        assert len(b) == tr.count("\n\nWait")
    assert 0.2 < n_wait / 200 < 0.6   # p_error 0.3 + p_check 0.15 * 0.7


def test_slip_then_correction():
    rng = random.Random(0)
    p = task.generate_problems(1, seed=0)[0]
    tr = task.reference_trace(p, rng, p_error=1.0)
    first, second, final = tr.split("\n\n")
    assert second.startswith("Wait , ")
    assert first.endswith(" .") and f"So the answer is {p.answer} ." not in first   # the slip carries to the end
    assert second.endswith(f"So the answer is {p.answer} .") and final == f"The answer is \\boxed{{{p.answer}}} ."


def test_verify_edge_cases():
    assert task.verify("\\boxed{3} then \\boxed{ 4 }", 4) == 1.0
    assert task.verify("\\boxed{3}", "3") == 1.0
    assert task.verify("no box 3", 3) == 0.0
    assert task.verify("\\boxed{x}", 3) == 0.0
    assert task.verify("\\boxed{3}", "three") == 0.0
