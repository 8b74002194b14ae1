"""scripts/compare_runs.py: two runs agree only if every non-timing value of every metrics line is the same, bit for
bit; timing keys (time/*, *_per_s) never count."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "compare_runs.py")


@pytest.fixture(scope="module")
def cr():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RECORDS = [
    {"kind": "eval", "step": 0, "eval/accuracy": 0.6875, "eval/regret_normalized": 0.7489536830357146},
    {"kind": "train", "step": 1, "loss": -0.251211604103446, "generated_tokens": 13144, "time/step": 2.6,
     "tokens_per_s": 8906.8, "episode_share/0": 0.546875},
]


def _run(tmp_path, name: str, records: list[dict]) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def _changed(index: int, **values) -> list[dict]:
    records = [dict(r) for r in RECORDS]
    records[index].update(values)
    return records


def test_timing_keys_are_left_out(cr, tmp_path, capsys):
    b = _changed(1, **{"time/step": 9.9, "tokens_per_s": 1.0, "time/new_phase": 0.5})
    assert cr.main([_run(tmp_path, "a", RECORDS), _run(tmp_path, "b", b)]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "9 values compared" in out


def test_a_float_one_bit_apart_differs(cr, tmp_path, capsys):
    loss = RECORDS[1]["loss"]
    b = _changed(1, loss=math.nextafter(loss, 0.0))
    assert cr.main([_run(tmp_path, "a", RECORDS), os.path.join(_run(tmp_path, "b", b), "metrics.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "line 2 (kind train, step 1): loss: A -0.251211604103446" in out and "1 differences" in out


@pytest.mark.parametrize("a, b, equal", [
    (1, 1.0, False),                    # an int that became a float is a change in what is logged
    (0.0, -0.0, False),                 # equal as numbers, not bit for bit
    (float("nan"), float("nan"), True),
    (True, 1, False),
    ([1, 2.5], [1, 2.5], True),
    ({"x": [0.1]}, {"x": [0.1]}, True),
    ({"x": 1}, {"y": 1}, False),
])
def test_same(cr, a, b, equal):
    assert cr.same(a, b) is equal


def test_missing_keys_and_lines(cr):
    b = [dict(r) for r in RECORDS]
    del b[1]["loss"]
    b[0]["eval/new"] = 1.0
    diffs, _ = cr.compare(RECORDS + [{"kind": "eval", "step": 4}], b)
    assert diffs == ["line 1 (kind eval, step 0): eval/new only in B (1.0)",
                     "line 2 (kind train, step 1): loss only in A (-0.251211604103446)",
                     "A has 3 lines, B 2: from line 3 (kind eval, step 4) only A goes on"]


def test_unreadable_run(cr, tmp_path, capsys):
    assert cr.main([str(tmp_path / "nothing"), _run(tmp_path, "b", RECORDS)]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "eval"}\n{not json\n')
    assert cr.main([str(bad), str(bad)]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
