"""Chain arithmetic: the synthetic multi-step task of the embedded default.

A problem is a start value and a chain of additions and subtractions of small numbers (1..5), e.g. `17 + 5 - 3 + 4`,
whose running value stays in 0..49, so every number is one token of the tiny model's word-level tokenizer.

The reference trace works one operation a line; its paragraphs (separated by blank lines) are the episodes:
```
17 + 5 = 22 .            <- attempt: one line per operation
22 - 3 = 19 .
19 + 4 = 24 .
So the answer is 24 .

Wait , 19 + 4 = 23 .     <- a check: redo the slipped step and every step after it
So the answer is 23 .

The answer is \\boxed{23} .
```
With probability `p_error` the attempt slips on one step (a result off by 1 or 2) and carries the wrong value to the
end; a "Wait" paragraph then redoes the chain from that step correctly. With probability `p_check` a correct attempt
is followed by a "Wait" paragraph that redoes one step and confirms. So a meta-prover forced to answer after an
episode repeats the candidate of the last paragraph: its success rises exactly at the paragraph that repairs a slip,
which is the progress MRT rewards.

Problems are deterministic from a seed; a problem's split (train or heldout) is a hash of its text, so the held-out
problems never appear in training, whatever the seeds.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

MAX_VALUE = 49          # running values stay in 0..MAX_VALUE
MAX_OPERAND = 5         # operands are 1..MAX_OPERAND
HELDOUT_PERCENT = 10    # share of all problems (by hash) reserved for held-out evaluation
TERMINATION_TEXT = "The answer is \\boxed{"   # the meta-prover's forced answer, appended after a blank line


@dataclass(frozen=True)
class ArithmeticProblem:
    start: int
    ops: tuple[tuple[str, int], ...]     # ("+" | "-", operand 1..MAX_OPERAND)

    @property
    def text(self) -> str:
        return " ".join([str(self.start)] + [f"{op} {n}" for op, n in self.ops])

    @property
    def answer(self) -> int:
        v = self.start
        for op, n in self.ops:
            v = _apply(v, op, n)
        return v


def _apply(v: int, op: str, n: int) -> int:
    return v + n if op == "+" else v - n


def split_of(text: str) -> str:
    """'heldout' for HELDOUT_PERCENT% of problem texts (by a stable hash), else 'train'."""
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


def make_problem(rng: random.Random, min_ops: int = 3, max_ops: int = 5) -> ArithmeticProblem:
    start = v = rng.randint(1, 30)
    ops = []
    for _ in range(rng.randint(min_ops, max_ops)):
        n = rng.randint(1, MAX_OPERAND)
        # Pick the sign at random unless it would leave 0..MAX_VALUE.
        op = rng.choice("+-")
        if op == "+" and v + n > MAX_VALUE:
            op = "-"
        if op == "-" and v - n < 0:
            op = "+"
        ops.append((op, n))
        v = _apply(v, op, n)
    return ArithmeticProblem(start, tuple(ops))


def generate_problems(n: int, seed: int = 0, split: str = "train", min_ops: int = 3,
                      max_ops: int = 5) -> list[ArithmeticProblem]:
    """n distinct problems of the given split, deterministic from seed."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"arithmetic-{seed}-{split}")
    out, seen = [], set()
    for _ in range(200 * n + 1000):
        if len(out) == n:
            break
        p = make_problem(rng, min_ops, max_ops)
        if p.text in seen or split_of(p.text) != split:
            continue
        seen.add(p.text)
        out.append(p)
    if len(out) < n:
        raise ValueError(f"could not draw {n} distinct {split} problems with {min_ops}..{max_ops} operations")
    return out


def _steps(v: int, ops, slip_at: int | None, rng: random.Random) -> tuple[list[str], int]:
    """Lines `a op n = r .` from value v; at index slip_at the result is off by 1 or 2 (kept in range)."""
    lines = []
    for i, (op, n) in enumerate(ops):
        r = _apply(v, op, n)
        if i == slip_at:
            wrong = [r + d for d in (-2, -1, 1, 2) if 0 <= r + d <= MAX_VALUE]
            r = rng.choice(wrong)
        lines.append(f"{v} {op} {n} = {r} .")
        v = r
    return lines, v


def reference_trace(problem: ArithmeticProblem, rng: random.Random, p_error: float = 0.3,
                    p_check: float = 0.15) -> str:
    """A worked solution in paragraphs (see the module docstring); the final answer is always correct."""
    ops = problem.ops
    slip = rng.randrange(len(ops)) if rng.random() < p_error else None
    lines, cand = _steps(problem.start, ops, slip, rng)
    paragraphs = ["\n".join(lines + [f"So the answer is {cand} ."])]
    if slip is not None:
        # Redo from the slipped step with the correct values.
        v = problem.start
        for op, n in ops[:slip]:
            v = _apply(v, op, n)
        redo, cand = _steps(v, ops[slip:], None, rng)
        paragraphs.append("\n".join([f"Wait , {redo[0]}"] + redo[1:] + [f"So the answer is {cand} ."]))
    elif rng.random() < p_check:
        i = rng.randrange(len(ops))
        paragraphs.append(f"Wait , {lines[i]}\nSo the answer is {cand} .")
    paragraphs.append(f"The answer is \\boxed{{{cand}}} .")
    return "\n\n".join(paragraphs)


_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def extract_answer(text: str) -> int | None:
    """The integer in the last \\boxed{...} of text, or None."""
    found = _BOXED.findall(text)
    return int(found[-1]) if found else None


def verify(completion_text: str, answer) -> float:
    """1.0 if the last \\boxed{} integer equals answer (an int or its string form), else 0.0."""
    got = extract_answer(completion_text)
    try:
        want = int(str(answer).strip())
    except ValueError:
        return 0.0
    return 1.0 if got is not None and got == want else 0.0
