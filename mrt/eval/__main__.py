"""`python -m mrt.eval --model DIR --data FILE [--budgets ...] [--samples N] [--out DIR] [--config FILE]`.

Bad input (a setting, a dataset file or row, a model folder or hub id, a tokenizer) ends with one `error: ...` line and
exit code 2, as train.py does (mrt/errors.py).
"""
import sys

from mrt.errors import one_line, user_error_types

from .config import parse_args
from .report import markdown_table
from .run import run


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
        results = run(cfg)
    except (ValueError, *user_error_types()) as exc:  # bad input: a clear message, no traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(f"wrote {cfg.out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
