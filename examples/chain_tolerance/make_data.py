"""Write data.jsonl of the example: chain-arithmetic problems (the embedded tiny model's task, so its word-level
tokenizer covers every word) with two extra columns the reward reads: `tolerance` (how far off an answer still earns
half credit: 1 for chains of 3 operations, 2 for longer ones) and `budget` (words of a trace without checks: about
six per operation line plus the answer lines).

    python examples/chain_tolerance/make_data.py   # rewrites examples/chain_tolerance/data.jsonl (seed 0, 96 rows)
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from mrt.tasks.arithmetic import generate_problems  # noqa: E402

ROWS = 96


def main() -> None:
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.jsonl")
    with open(out, "w") as f:
        for p in generate_problems(ROWS, seed=0, split="train"):
            n = len(p.ops)
            row = {"problem": p.text, "answer": p.answer, "tolerance": 1 if n <= 3 else 2, "budget": 6 * n + 14}
            f.write(json.dumps(row) + "\n")
    print(f"wrote {ROWS} rows to {out}")


if __name__ == "__main__":
    main()
