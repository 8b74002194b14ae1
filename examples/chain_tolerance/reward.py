"""The example task's rewards (examples/chain_tolerance): chain arithmetic graded with partial credit.

`score` is the outcome reward (`reward: examples/chain_tolerance/reward.py:score`): 1.0 for the exact answer in the
last \\boxed{}, 0.5 for one off by at most the row's own `tolerance` column, 0.0 otherwise (or without a boxed
integer). `brevity` is a shaping term (`shaping: [{fn: ...:brevity, weight: ...}]`): minus the share of the row's
`budget` words the completion spends beyond one line per operation, so a trace that keeps checking costs a little.
Both are called as fn(completion_text, answer, columns), columns being the row's other columns.
"""
import re

_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def boxed_int(text: str):
    found = _BOXED.findall(text)
    return int(found[-1]) if found else None


def score(completion: str, answer, columns: dict) -> float:
    got = boxed_int(completion)
    if got is None:
        return 0.0
    miss = abs(got - int(answer))
    if miss == 0:
        return 1.0
    return 0.5 if miss <= int(columns.get("tolerance", 0)) else 0.0


def brevity(completion: str, answer, columns: dict) -> float:
    words = len(completion.split())
    budget = int(columns["budget"])
    return -max(words - budget, 0) / budget
