"""Compare two training runs' metrics.jsonl line by line and key by key: are they the same run, bit for bit?

    python scripts/compare_runs.py RUN_A RUN_B [--show 20]

RUN_A / RUN_B: a run folder (its metrics.jsonl is read) or a metrics.jsonl file. How a refactor proves it changes
nothing: the same command on the commit before it and after it, then this script on the two runs' folders.

Every line's keys are compared exactly: the same keys, the same JSON types (an int that became a float is a change),
and floats equal bit for bit (0.0 and -0.0 differ; a NaN equals a NaN of the same bits). Timing is left out, as it
varies from run to run: keys starting with `time/` and keys ending in `_per_s`. Prints the first differences (--show)
and a summary; exits 0 if the runs agree, 1 if any value, key or line differs, 2 if a run cannot be read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys

IGNORED_PREFIXES = ("time/",)
IGNORED_SUFFIXES = ("_per_s",)


def ignored(key: str) -> bool:
    """A timing key: it differs between two runs of the same commands."""
    return key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def metrics_path(run: str) -> str:
    return os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run


def read_metrics(run: str) -> list[dict]:
    """The records of a run's metrics.jsonl, in order (blank lines skipped)."""
    path = metrics_path(run)
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
    return records


def same(a, b) -> bool:
    """a and b are the same JSON value: equal types, floats equal bit for bit, containers compared item by item."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value!r} ({value.hex()})"      # repr round-trips; hex shows which bits moved
    return json.dumps(value)


def _where(n: int, record: dict) -> str:
    tags = [f"{k} {record[k]}" for k in ("kind", "step") if k in record]
    return f"line {n}" + (f" ({', '.join(tags)})" if tags else "")


def compare(a: list[dict], b: list[dict]) -> tuple[list[str], int]:
    """(every difference as a line of text, the number of values compared) between two runs' records."""
    diffs, compared = [], 0
    for n, (ra, rb) in enumerate(zip(a, b), 1):
        where = _where(n, ra)
        for key in sorted(set(ra) | set(rb)):
            if ignored(key):
                continue
            if key not in rb:
                diffs.append(f"{where}: {key} only in A ({json.dumps(ra[key])})")
            elif key not in ra:
                diffs.append(f"{where}: {key} only in B ({json.dumps(rb[key])})")
            else:
                compared += 1
                if not same(ra[key], rb[key]):
                    diffs.append(f"{where}: {key}: A {_show(ra[key])} != B {_show(rb[key])}")
    if len(a) != len(b):
        longer, name = (a, "A") if len(a) > len(b) else (b, "B")
        first = min(len(a), len(b))
        diffs.append(f"A has {len(a)} lines, B {len(b)}: from {_where(first + 1, longer[first])} only {name} goes on")
    return diffs, compared


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_a", metavar="RUN_A", help="a run folder or its metrics.jsonl")
    ap.add_argument("run_b", metavar="RUN_B", help="a run folder or its metrics.jsonl")
    ap.add_argument("--show", type=int, default=20, help="print at most this many differences (default 20)")
    args = ap.parse_args(argv)
    try:
        a, b = read_metrics(args.run_a), read_metrics(args.run_b)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    diffs, compared = compare(a, b)
    for line in diffs[:args.show]:
        print(line)
    if len(diffs) > args.show:
        print(f"... and {len(diffs) - args.show} more")
    verdict = "identical" if not diffs else f"{len(diffs)} differences"
    print(f"{metrics_path(args.run_a)} vs {metrics_path(args.run_b)}: {len(a)} / {len(b)} lines, {compared} values "
          f"compared (time/* and *_per_s left out): {verdict}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
