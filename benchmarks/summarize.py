"""Print one table from the JSON files the benchmarks wrote: one block per file, one line per measured row.

Each benchmark writes {..., "rows" (or another name): [ {column: value}, ... ]}; columns are printed as found, so a
new benchmark needs no change here.   usage: python benchmarks/summarize.py bench_results/*.json
"""
import json
import sys


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summarize(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    # The rows: the first list of dicts in the file ("rows", "results", "runs", ... as each benchmark names it).
    rows = next((v for v in data.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)), [])
    if not rows:  # or one dict per method: {"mrt": {...}, "grpo": {...}}
        rows = [{"name": k, **v} for k, v in data.items() if isinstance(v, dict)]
    header = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
    print(f"\n## {path}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in header.items()))
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (list, dict))))
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    for p in sys.argv[1:]:
        try:
            summarize(p)
        except (OSError, ValueError) as exc:
            print(f"\n## {p}: unreadable ({exc})")
