"""A plain clone runs its tests with nothing beside it: no code, test, benchmark or script reads a data folder outside
the repository (the real-data rows and tokenizer files the tests need are in tests/fixtures, see its README).

The check reads every Python, shell, YAML and TOML file of the repository for a path to the data folder beside it,
written as one string (dot-dot slash and the folder's name, or the name slash data) or as path parts (a join of
"..", then the name); `test_the_pattern_catches_every_spelling` lists the spellings.
"""
from __future__ import annotations

import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SUFFIXES = (".py", ".sh", ".yaml", ".yml", ".toml", ".cfg")
SKIP_DIRS = {".git", ".venv", "build", "runs", "bench_results", "__pycache__", "node_modules"}
_Q = "[\"']"
# The folder's name is spelt from pieces so that this file's own text does not match.
_NAME = "sha" + "red"
OUTSIDE = re.compile("|".join([
    r"\.\./+" + _NAME + r"\b",                                    # dot-dot slash name (any depth)
    r"\b" + _NAME + r"/data\b",                                   # name slash data
    _Q + r"\.\." + _Q + r"\s*,\s*(?:" + _Q + r"\.\." + _Q + r"\s*,\s*)*" + _Q + _NAME + _Q,   # path parts: "..", name
    r"/work/" + _NAME + r"\b",
]))


def _files():
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info")]
        for f in files:
            if f.endswith(SUFFIXES) or (os.path.basename(d) == ".ci" and "." not in f):
                yield os.path.join(d, f)


def offending_lines(paths) -> list[str]:
    """'path:line: text' of every line that names the data folder outside the repository."""
    out = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        out += [f"{os.path.relpath(p, ROOT)}:{i}: {line.strip()}" for i, line in enumerate(lines, 1)
                if OUTSIDE.search(line)]
    return out


def test_the_pattern_catches_every_spelling():
    bad = [f'SHARED = os.path.join(ROOT, "..", "{_NAME}", "data")',
           f"QWEN = os.path.join(HERE, '..', '..', '{_NAME}', 'data', 'tokenizers')",
           f'open("../{_NAME}/data/aime24.jsonl")', f'open(f"{{ROOT}}/../{_NAME}/x")',
           f'p = "{_NAME}/data/train_math.jsonl"', f'cat /work/{_NAME}/data/README.md']
    good = ['os.path.join(ROOT, "tests", "fixtures", "aime24.jsonl")', "a prefix-shared KV cache",
            "shared memory per block", 'blocks shared = parent.block_table[:n]', '"..", "tests", "fixtures"']
    assert [b for b in bad if not OUTSIDE.search(b)] == []
    assert [g for g in good if OUTSIDE.search(g)] == []


def test_no_file_reads_outside_the_repository():
    files = list(_files())
    assert any(p.endswith(os.path.join("mrt", "trainer.py")) for p in files)      # the walk reached the code
    found = offending_lines(files)
    assert not found, "reads outside the repository (copy what a test needs into tests/fixtures):\n" + "\n".join(found)
