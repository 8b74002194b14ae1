"""`python -m mrt.eval --model DIR --data FILE [--budgets ...] [--samples N] [--out DIR] [--config FILE]`."""
import sys

from .config import parse_args
from .report import markdown_table
from .run import run


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
        results = run(cfg)
    except ValueError as exc:  # bad input: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(f"wrote {cfg.out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
