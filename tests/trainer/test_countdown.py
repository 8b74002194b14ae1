"""The Countdown search task: problems, split, verifier, tokenizer, the search-trace writer, its wiring, a smoke run."""
import os
import random
import re
from collections import Counter

import pytest

from mrt.episodes import markers_segmenter
from mrt.tasks import countdown as task

from .conftest import ROOT, import_script

COUNTDOWN_MODEL = os.path.join(ROOT, "mrt", "assets", "tiny_model")          # the embedded default
needs_model = pytest.mark.skipif(not os.path.isfile(os.path.join(COUNTDOWN_MODEL, "model.safetensors")),
                                 reason="mrt/assets/tiny_model not made yet "
                                        "(python scripts/make_tiny_model.py)")


@pytest.fixture(scope="module")
def tokenizer():
    script = import_script("make_tiny_model")
    return script.build_tokenizer(task.WORDS, model_max_length=512)


# ------------------------------------------------------------------------------------------------ problems

def test_deterministic_and_disjoint():
    a = task.generate_problems(300, seed=3)
    assert a == task.generate_problems(300, seed=3)
    assert a != task.generate_problems(300, seed=4)
    held = task.generate_problems(200, seed=3, split="heldout")
    train = {p.text for s in range(3) for p in task.generate_problems(500, seed=s)}
    assert not train & {p.text for p in held}
    assert all(task.split_of(p.text) == "heldout" for p in held)
    assert len({p.text for p in a}) == 300
    with pytest.raises(ValueError, match="split"):
        task.generate_problems(1, split="test")
    with pytest.raises(ValueError, match="distinct heldout problems"):
        task.generate_problems(10**6, split="heldout")


def test_pool_bounds_and_text():
    pool = task.problem_pool()
    assert len(pool) > 2000 and sum(task.split_of(p.text) == "heldout" for p in pool) >= 256
    for p in pool[::7]:
        assert len(p.numbers) == task.NUM_NUMBERS and list(p.numbers) == sorted(p.numbers)
        assert all(1 <= n <= task.MAX_NUMBER for n in p.numbers)
        assert task.MIN_TARGET <= p.target <= task.MAX_VALUE
        assert task.MIN_SUCCESS <= task.success_probability(p) <= task.MAX_SUCCESS
        assert task.parse_problem(p.text) == p
    with pytest.raises(ValueError, match="not a countdown problem"):
        task.parse_problem("17 + 5 - 3")


def test_attempt_distribution_by_enumeration():
    """q of each attempt equals 1 / (pairs) / (valid steps) along its path, summed over paths giving the same text."""
    numbers = (3, 7, 9)
    dist = task.attempt_distribution(numbers)
    assert abs(sum(dist.values()) - 1.0) < 1e-12          # no dead ends with these numbers
    for a, p in dist.items():
        assert p > 0 and len(a.steps) == 2
        s1, s2 = a.steps
        rest = list(numbers)
        rest.remove(s1.hi)
        rest.remove(s1.lo)
        assert sorted((s2.hi, s2.lo)) == sorted((s1.result, rest[0]))
        value, used = task.evaluate(a.expr)
        assert value == a.value == s2.result and sorted(used) == sorted(numbers)
    # 9 - 3 = 6 then 7 * 6 = 42: pair 1/3, then 4 valid steps of (9, 3), then 3 of (7, 6) (7 / 6 is not exact).
    first = task.Step(9, "-", 3, 6)
    a = next(x for x in dist if x.steps == (first, task.Step(7, "*", 6, 42)))
    assert abs(dist[a] - 1 / 3 / 4 / 3) < 1e-12 and a.expr == "7 * ( 9 - 3 )"


# ------------------------------------------------------------------------------------------------ verifier

P = task.CountdownProblem((3, 7, 9), 30)


@pytest.mark.parametrize("expr", ["( 7 * 3 ) + 9", "7*3+9", "9 + 3 * 7", "((3*7))+9", " 3 * 7 + 9 ",
                                  "9 + 7 * 3"])
def test_verifier_accepts_right_answers(expr):
    assert task.verify(f"The answer is \\boxed{{{expr}}} .", P.text) == 1.0
    assert task.verify(f"\\boxed{{{expr}}}", P) == 1.0


@pytest.mark.parametrize("text,why", [
    ("\\boxed{( 7 * 3 ) - 9}", "wrong value"),
    ("\\boxed{7 * 3 + 9} then \\boxed{7 + 3 + 9}", "the last box counts"),
    ("\\boxed{7 * 3 + 3 + 3}", "3 reused, 9 unused"),
    ("\\boxed{7 * 3 + 9 + 0}", "unknown number"),
    ("\\boxed{10 * 3}", "unknown number, two unused"),
    ("\\boxed{7 * 3 + 9 + 9 - 9}", "9 used three times"),
    ("\\boxed{27 + 3}", "an intermediate value is no given number"),
    ("\\boxed{7 * + 3 9}", "malformed"),
    ("\\boxed{( 7 * 3 + 9}", "unclosed"),
    ("\\boxed{7 * 3 ) + 9}", "unopened"),
    ("\\boxed{seven}", "not arithmetic"),
    ("\\boxed{}", "empty"),
    ("\\boxed{-3 + 7 * 3 + 12}", "unary minus"),
    ("7 * 3 + 9 = 30", "no box"),
    ("\\boxed{7 * 3 + 9", "box not closed"),
])
def test_verifier_rejects(text, why):
    assert task.verify(text, P.text) == 0.0, why


def test_verifier_division_rules():
    p = task.CountdownProblem((2, 2, 7), 7)
    assert task.verify("\\boxed{7 * 2 / 2}", p) == 1.0            # (7 * 2) / 2 = 7, exact
    assert task.verify("\\boxed{7 / 2 * 2}", p) == 0.0            # 7 / 2 is not exact, though the value is 7
    q = task.CountdownProblem((3, 3, 9), 9)
    assert task.verify("\\boxed{9 + 3 / ( 3 - 3 )}", q) == 0.0    # division by zero
    assert task.verify("\\boxed{9 / ( 3 / 3 )}", q) == 1.0
    with pytest.raises(ValueError, match="division by zero"):
        task.evaluate("9 / ( 3 - 3 )")
    with pytest.raises(ValueError, match="not exact"):
        task.evaluate("7 / 2")
    assert task.verify("\\boxed{7 * 3 + 9}", "make thirty from 3 7 9") == 0.0   # unparsable problem


def test_extract_answer_normalises():
    assert task.extract_answer("x \\boxed{(7*3)+9} .") == "( 7 * 3 ) + 9"
    assert task.extract_answer("\\boxed{7 x 3}") is None and task.extract_answer("nothing") is None


# ------------------------------------------------------------------------------------------------ traces

_STEP = re.compile(r"^(?:keep )?(\d+) ([-+*/]) (\d+) = (\d+) \.$")
_CHECK = re.compile(r"^(\d+) is (not )?(\d+) \.$")


def _check_trace(trace: str, p: task.CountdownProblem) -> int:
    """Every attempt's arithmetic, bookkeeping and check, recomputed from the text; the number of attempts."""
    paragraphs = trace.split("\n\n")
    assert paragraphs[-1] == f"The answer is \\boxed{{{task.extract_answer(paragraphs[-1])}}} ."
    seen = set()
    for k, para in enumerate(paragraphs[:-1]):
        assert para.startswith("Wait , ") == (k > 0), para       # a marker opens every attempt after a failure
        lines = para.removeprefix("Wait , ").split("\n")
        assert len(lines) == task.NUM_NUMBERS and (k > 0 or not lines[0].startswith("keep"))
        pool = Counter(p.numbers)
        for line in lines[:-1]:
            m = _STEP.match(line)
            assert m, line
            hi, op, lo, r = int(m[1]), m[2], int(m[3]), int(m[4])
            want = {"+": hi + lo, "-": hi - lo, "*": hi * lo, "/": hi // lo if hi % lo == 0 else None}[op]
            assert r == want and hi >= lo and 1 <= r <= task.MAX_VALUE, line
            pool -= Counter([hi, lo])
            assert all(v >= 0 for v in pool.values()), f"{line}: uses a number it does not have"
            pool[r] += 1
        m = _CHECK.match(lines[-1])
        assert m, lines[-1]
        assert int(m[1]) == r and int(m[3]) == p.target and bool(m[2]) == (r != p.target), lines[-1]
        assert list(pool.elements()) == [r]                     # every number used exactly once
        assert (r == p.target) == (k == len(paragraphs) - 2)   # the search stops at its first success
        key = tuple(x.removeprefix("keep ") for x in lines)
        assert key not in seen, "an attempt repeated"
        seen.add(key)
    assert task.verify(trace, p.text) == 1.0
    return len(paragraphs) - 1


def test_search_traces_are_right(seed, tokenizer):
    rng = random.Random(seed)
    seg = markers_segmenter(["Wait"], min_paragraphs=1)
    attempts, keeps = [], 0
    for p in task.generate_problems(150, seed=seed % 1000):
        tr = task.search_trace(p, rng)
        attempts.append(_check_trace(tr, p))
        keeps += tr.count("Wait , keep")
        ids = tokenizer(tr, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == tr
        assert len(seg.boundaries(ids, tokenizer)) == tr.count("\n\nWait")
        assert len(ids) <= 20 + 23 * (task.MAX_ATTEMPTS - 1) + 16     # a backtrack's "keep" is one more token
    assert max(attempts) <= task.MAX_ATTEMPTS and 2.5 < sum(attempts) / len(attempts) < 5.5
    assert keeps > 0


def test_search_does_not_peek():
    """The first attempt succeeds as often as a random attempt does (q), not more: the writer knows no solution."""
    rng = random.Random(0)
    probs = task.generate_problems(2000, seed=5)
    first = sum(task.search_trace(p, rng).count("\n\n") == 1 for p in probs) / len(probs)
    q = sum(task.success_probability(p) for p in probs) / len(probs)
    assert 0.15 < q < 0.3
    # Redrawing the rare searches of more than MAX_ATTEMPTS attempts lifts it a little; 3 sigma is ~0.027.
    assert q - 0.03 < first < q + 0.045, (first, q)


def test_attempt_lengths_fit_the_preset(tokenizer):
    """Budgets of the docs: a failed first attempt is 20 tokens, each later one 22 (the successful one one less, "keep"
    one more), a final answer at most 16."""
    rng = random.Random(1)
    for p in task.generate_problems(40, seed=2):
        paragraphs = task.search_trace(p, rng).split("\n\n")
        n = [len(tokenizer(x + "\n\n", add_special_tokens=False)["input_ids"]) for x in paragraphs[:-1]]
        assert n[0] == 20 - (len(n) == 1) and all(21 <= x <= 23 for x in n[1:]), n
        assert len(tokenizer(paragraphs[-1], add_special_tokens=False)["input_ids"]) <= 16


def test_tokenizer_round_trip(tokenizer):
    arithmetic = import_script("make_tiny_model").build_tokenizer()
    assert set(arithmetic.get_vocab()) < set(tokenizer.get_vocab())     # the arithmetic tokens, and the task's words
    for text in ["make 30 from 3 7 9", "Wait , keep 7 * 3 = 21 .\n21 + 9 = 30 .\n30 is 30 .",
                 "The answer is \\boxed{( 7 * 3 ) + 9} .", "100 / 20 = 5 .\n5 is not 30 ."]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == text
    assert len(tokenizer("( 7 * 3 ) + 9", add_special_tokens=False)["input_ids"]) == 7   # numbers are one token


# ------------------------------------------------------------------------------------------------ wiring

def test_wired_like_arithmetic(tokenizer):
    from mrt.config import DataConfig, load_config
    from mrt.data import load_prompts
    from mrt.eval.problems import get_verifier, load_dataset
    from mrt.rewards import get_reward
    from mrt.termination import resolve_termination_text

    ds = load_prompts(DataConfig(path="countdown", format="task", num_problems=12), tokenizer, seed=1)
    assert [e.problem for e in ds.examples] == [p.text for p in task.generate_problems(12, seed=1)]
    assert ds.examples[0].prompt_text == f"Question : {ds.examples[0].problem}\nAnswer :\n"
    held = load_prompts(DataConfig(path="countdown", format="task"), tokenizer, split="heldout", max_rows=5)
    assert all(task.split_of(e.problem) == "heldout" for e in held.examples)
    auto = load_prompts(DataConfig(path="countdown", format="auto", num_problems=3), tokenizer)
    assert len(auto) == 3
    reward = get_reward("countdown")
    assert reward("\\boxed{7 * 3 + 9}", P.text) == 1.0 and reward("\\boxed{7 * 3 - 9}", P.text) == 0.0
    assert resolve_termination_text("countdown") == task.TERMINATION_TEXT
    ev = load_dataset("countdown:5")
    assert ev.name == "countdown" and len(ev.problems) == 5 and ev.termination_text == task.TERMINATION_TEXT
    assert all(task.split_of(x) == "heldout" for x in ev.problems) and ev.answers == ev.problems
    v = get_verifier(ev.verifier)
    assert v.extract("\\boxed{7*3+9}") == "7 * 3 + 9" and v.reward("\\boxed{7*3+9}", P.text) == 1.0
    cfg = load_config(os.path.join(ROOT, "configs", "tiny_mrt.yaml"))
    assert cfg == load_config(None)      # countdown is the embedded default
    assert cfg.reward == "countdown" and cfg.data.path == "countdown"
    assert cfg.meta_prover.termination_text == task.TERMINATION_TEXT
    assert cfg.model.path == "mrt:assets/tiny_model"


@needs_model
def test_shipped_model_matches_the_script(tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import json
    size = sum(os.path.getsize(os.path.join(COUNTDOWN_MODEL, f)) for f in os.listdir(COUNTDOWN_MODEL))
    assert size < 10 * 2**20
    tok = AutoTokenizer.from_pretrained(COUNTDOWN_MODEL)
    assert tok.get_vocab() == tokenizer.get_vocab()
    model = AutoModelForCausalLM.from_pretrained(COUNTDOWN_MODEL)
    assert model.config.max_position_embeddings >= 512 and len(tok) <= model.config.vocab_size
    with open(os.path.join(COUNTDOWN_MODEL, "training_info.json")) as f:
        info = json.load(f)
    assert info["task"] == "mrt.tasks.countdown" and info["seconds"] <= 15 * 60
    assert info["heldout_sampled"]["step_accuracy"] > 0.8


@needs_model
def test_two_training_steps_of_the_preset(tmp_path):
    """The preset, cut to 2 small steps with dynamic sampling on: episodes are found, the meta-prover scores them,
    the run ends with its held-out evaluation."""
    from mrt.config import load_config
    from mrt.trainer import Trainer
    cfg = load_config(os.path.join(ROOT, "configs", "tiny_mrt.yaml"), [
        "--optim.steps", "2", "--optim.prompts_per_step", "2", "--rollout.group_size", "4",
        "--rl.dynamic_sampling_max_rounds", "2", "--eval.held_out", "4", "--eval.samples", "1",
        "--logging.out_dir", str(tmp_path), "--logging.progress_bar", "false", "--logging.plots", "false",
        "--checkpoint.every", "0", "--data.num_problems", "16"])
    tr = Trainer(cfg)
    batch, _ = tr.rollout(0)
    assert sum(len(t.boundaries) for t in batch.traces) > 0, "no episode boundary: no progress to test"
    assert all(len(t.J) == len(t.boundaries) and all(0.0 <= j <= 1.0 for j in t.J) for t in batch.traces)
    out = tr.train()
    assert out["step"] == 2 and not out["interrupted"]
    train = [r for r in out["records"] if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["skipped"] == 0.0 for r in train)
    assert 0.0 <= out["after"]["eval/accuracy"] <= 1.0
