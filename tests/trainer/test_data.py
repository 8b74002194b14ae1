import json

import pytest

from mrt.config import DataConfig
from mrt.data import DataError, detect_format, format_prompt, load_prompts

from .conftest import FIXTURES


def _cfg(path, **kw):
    return DataConfig(path=str(path), format=kw.pop("format", "auto"), max_prompt_tokens=kw.pop("max_prompt_tokens", 4096),
                      **kw)


# The fixtures' row counts (tests/fixtures/README.md: a few rows of each benchmark).
@pytest.mark.parametrize("name, n, answer_type", [("aime24", 12, str), ("amc23", 11, float), ("math500", 10, str)])
def test_real_data_files(qwen_tokenizer, name, n, answer_type):
    ds = load_prompts(_cfg(f"{FIXTURES}/{name}.jsonl"), qwen_tokenizer)
    assert len(ds) == n and ds.skipped == 0
    assert all(isinstance(e.answer, answer_type) for e in ds.examples)
    e = ds[0]
    assert e.prompt_text.startswith("<|im_start|>system\nPlease reason step by step")
    assert e.prompt_text.endswith("<|im_end|>\n<|im_start|>assistant\n") and e.problem in e.prompt_text
    assert qwen_tokenizer.decode(e.prompt_ids) == e.prompt_text
    if name == "aime24":
        assert {"025", "073", "080"} <= {x.answer for x in ds.examples}     # zero-padded strings kept as given
    if name == "amc23":
        assert -1.0 in [x.answer for x in ds.examples]


def test_train_math_head_and_raw(qwen_tokenizer):
    ds = load_prompts(_cfg(f"{FIXTURES}/train_math.jsonl", chat_template=False), qwen_tokenizer, max_rows=20)
    assert len(ds) == 20 and ds[0].prompt_text == ds[0].problem
    ds = load_prompts(_cfg(f"{FIXTURES}/train_math.jsonl", system_prompt="Be brief."), qwen_tokenizer, max_rows=3)
    assert ds[0].prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_columns_and_json_array(tmp_path, qwen_tokenizer):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"q": "What is 1+1?", "a": 2}, {"q": "And 2+2?", "a": "4"}]))
    ds = load_prompts(_cfg(p, prompt_column="q", answer_column="a"), qwen_tokenizer)
    assert [e.answer for e in ds.examples] == [2, "4"]


BAD_ROWS = [
    ('{"problem": "ok", "answer": "1"}\n{"answer": "2"}\n', "row 1: missing column 'problem'"),
    ('{"problem": "ok", "answer": "1"}\n{"problem": "x"}\n', "row 1: missing column 'answer'"),
    ('{"problem": 5, "answer": "1"}\n', "row 0: column 'problem' must be a string"),
    ('{"problem": "  ", "answer": "1"}\n', "row 0: column 'problem' is empty"),
    ('{"problem": "x", "answer": ""}\n', "row 0: column 'answer' is empty"),
    ('{"problem": "x", "answer": null}\n', "row 0: column 'answer' must be a string or a number"),
    ('{"problem": "x", "answer": [1]}\n', "row 0: column 'answer' must be a string or a number"),
    ('{"problem": "x", "answer": "1"}\n{not json\n', "row 1: line 2 is not valid JSON"),
    ('[1, 2]\n', "row 0: expected an object"),
]


@pytest.mark.parametrize("content, msg", BAD_ROWS)
def test_malformed_row_raises_naming_file_and_row(tmp_path, qwen_tokenizer, content, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        load_prompts(_cfg(p), qwen_tokenizer)
    print(e.value)
    assert str(p) in str(e.value) and msg in str(e.value)


def test_skip_malformed_counts(tmp_path, qwen_tokenizer):
    p = tmp_path / "mixed.jsonl"
    p.write_text("".join(c for c, _ in BAD_ROWS[:7]) + '{"problem": "fine", "answer": 3}\n')
    ds = load_prompts(_cfg(p, skip_malformed=True), qwen_tokenizer)
    # BAD_ROWS[:7] hold 9 rows, 2 of them good ("ok", "ok"); then one good last line.
    assert [e.problem for e in ds.examples] == ["ok", "ok", "fine"]
    assert ds.skipped == 7 and len(ds.skipped_reasons) == 7


def test_too_long_prompt(tmp_path, qwen_tokenizer):
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps({"problem": "word " * 100, "answer": "1"}) + "\n")
    with pytest.raises(DataError, match="row 0: prompt has .* tokens, more than data.max_prompt_tokens=50"):
        load_prompts(_cfg(p, max_prompt_tokens=50), qwen_tokenizer)


def test_missing_file_and_format(tmp_path, qwen_tokenizer):
    with pytest.raises(DataError, match="no such file"):
        load_prompts(_cfg(tmp_path / "none.jsonl"), qwen_tokenizer)
    with pytest.raises(DataError, match="data format"):
        detect_format(str(tmp_path / "x.csv"))
    assert detect_format(str(tmp_path)) == "datasets" and detect_format("arithmetic") == "task"


def test_task_prompts(tiny_tokenizer):
    from mrt.tasks import arithmetic as task
    ds = load_prompts(DataConfig(path="arithmetic"), tiny_tokenizer, max_rows=50)
    held = load_prompts(DataConfig(path="arithmetic"), tiny_tokenizer, split="heldout", max_rows=50)
    assert len(ds) == 50 and len(held) == 50
    assert not {e.problem for e in ds.examples} & {e.problem for e in held.examples}
    e = ds[0]
    assert e.prompt_text == f"Question : {e.problem}\nAnswer :\n" and tiny_tokenizer.unk_token_id not in e.prompt_ids
    assert int(e.answer) == task.generate_problems(1, seed=0)[0].answer


def test_no_chat_template_is_an_error(tiny_tokenizer):
    import copy
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(DataError, match="chat template"):
        format_prompt("1 + 1", tok)


def test_parquet(tmp_path, qwen_tokenizer):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "answer": ["2", "4"]}), p)
    ds = load_prompts(_cfg(p), qwen_tokenizer)
    assert [e.answer for e in ds.examples] == ["2", "4"]
    pq.write_table(pa.table({"problem": ["1+1?", None], "answer": ["2", "4"]}), p)
    with pytest.raises(DataError, match="row 1: column 'problem' must be a string"):
        load_prompts(_cfg(p), qwen_tokenizer)


def test_datasets_folder(tmp_path, qwen_tokenizer):
    datasets = pytest.importorskip("datasets")
    d = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"problem": ["1+1?"], "answer": ["2"]})})
    d.save_to_disk(str(tmp_path / "ds"))
    ds = load_prompts(_cfg(tmp_path / "ds"), qwen_tokenizer)
    assert ds[0].answer == "2"
    with pytest.raises(DataError, match="no split 'test'"):
        load_prompts(_cfg(tmp_path / "ds", split="test"), qwen_tokenizer)


@pytest.mark.parametrize("chat", [True, False])
def test_one_prompt_formatter(qwen_tokenizer, chat):
    """Training and evaluation share prompt_ids: with the chat template it gives the ids the template itself gives
    when tokenising (what mrt.eval used to call), without it the raw text with the tokenizer's special tokens."""
    from mrt.data import prompt_ids
    problem = "Find $x$ if $2x + 3 = 11$. Wait, is it 4?"
    text, ids = prompt_ids(problem, qwen_tokenizer, chat)
    if chat:
        want = qwen_tokenizer.apply_chat_template([{"role": "user", "content": problem}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)
        assert text.endswith("<|im_start|>assistant\n") and problem in text
    else:
        want = qwen_tokenizer(problem)["input_ids"]
        assert text == problem
    assert ids == list(want["input_ids"] if hasattr(want, "keys") else want)
