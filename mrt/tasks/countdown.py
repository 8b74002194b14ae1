"""Countdown: reach a target from three given numbers with + - * and exact /, each number used exactly once.

A search task: checking a candidate is one line of arithmetic, finding one is a search over about 30 ways of
combining the numbers, of which a few reach the target. So a later episode can succeed where an earlier one failed
without knowing anything the earlier one did not: it simply tries another combination and checks it.

A problem is `make 30 from 3 7 9` (numbers sorted, so one problem has one text). An attempt combines two of the
numbers, then the result with the third; each step writes its arithmetic (larger operand first, so every
intermediate value is a positive integer <= MAX_VALUE and every division exact), then checks the result against
the target. A search trace is a sequence of attempts, one paragraph (episode) each:
```
9 - 3 = 6 .                  <- attempt: two steps and a check
7 * 6 = 42 .
42 is not 30 .

Wait , 7 * 3 = 21 .          <- a new attempt after a failed one
21 - 9 = 12 .
12 is not 30 .

Wait , keep 7 * 3 = 21 .     <- a backtrack: keep the first step, try another second step
21 + 9 = 30 .
30 is 30 .

The answer is \\boxed{( 7 * 3 ) + 9} .
```
The search procedure (`search_trace`) draws each attempt at random without repeating one: the pair uniformly, then
the operation uniformly among the valid ones (the distribution `attempt_distribution`); with probability
`p_backtrack` it keeps the previous attempt's first step instead. It knows nothing of the solution: it stops at the
first attempt whose check succeeds. Problems are kept only if a random attempt succeeds with probability in
[MIN_SUCCESS, MAX_SUCCESS] (0.15..0.5, mean about 0.21): a single episode usually fails, several usually succeed,
which is what makes test-time compute pay and what MRT's progress bonus rewards.

The answer is an expression in the task's answer format (`\\boxed{...}`, the same termination text as
`mrt.tasks.arithmetic`, so the meta-prover can force an answer after any episode). `verify` parses it itself (it
never trusts the trace's own check): it must use the given numbers, each exactly once, with + - * / and parentheses,
every division exact and non-zero, and evaluate to the target.

Problems are the whole pool of valid (numbers, target) pairs (numbers 1..MAX_NUMBER, targets MIN_TARGET..MAX_VALUE),
shuffled by seed; a problem's split (train or heldout) is a hash of its text, so the held-out problems never appear
in training, whatever the seeds.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass

NUM_NUMBERS = 3         # given numbers a problem
MAX_NUMBER = 20         # given numbers are 1..MAX_NUMBER
MAX_VALUE = 100         # every intermediate value and target is 1..MAX_VALUE (one token each)
MIN_TARGET = 10         # smaller targets are mostly trivial
MIN_SUCCESS, MAX_SUCCESS = 0.15, 0.5   # kept: problems a random attempt solves with this probability
HELDOUT_PERCENT = 20    # share of problem texts (by hash) reserved for held-out evaluation: ~550 of ~2,700
MAX_ATTEMPTS = 10       # a search trace's most attempts (longer searches are redrawn)
TERMINATION_TEXT = "The answer is \\boxed{"   # the meta-prover's forced answer, appended after a blank line
WORDS = ["make", "from", "is", "not", "Wait", "keep", "The", "answer"]   # the trace's words (tokenizer)
OPS = "+-*/"


@dataclass(frozen=True)
class CountdownProblem:
    numbers: tuple[int, ...]     # sorted ascending
    target: int

    @property
    def text(self) -> str:
        return f"make {self.target} from " + " ".join(map(str, self.numbers))

    @property
    def answer(self) -> str:
        """What the verifier checks an answer against: the problem itself (many expressions are right)."""
        return self.text


_PROBLEM = re.compile(r"^\s*make\s+(\d+)\s+from\s+(\d+(?:\s+\d+)*)\s*$")


def parse_problem(text: str) -> CountdownProblem:
    """The problem of a text `make T from a b c` (ValueError otherwise)."""
    m = _PROBLEM.match(str(text))
    if not m:
        raise ValueError(f"not a countdown problem: {text!r} (expected 'make T from a b c')")
    return CountdownProblem(tuple(sorted(int(x) for x in m.group(2).split())), int(m.group(1)))


# ------------------------------------------------------------------------------------------------ attempts

@dataclass(frozen=True)
class Step:
    hi: int
    op: str
    lo: int
    result: int

    @property
    def line(self) -> str:
        return f"{self.hi} {self.op} {self.lo} = {self.result} ."


@dataclass(frozen=True)
class Attempt:
    """One way of combining all the numbers: its steps, its value and its expression."""
    steps: tuple[Step, ...]
    value: int
    expr: str


def apply_op(hi: int, op: str, lo: int) -> int | None:
    """hi op lo if it is an integer in 1..MAX_VALUE (a division exact), else None."""
    if op == "+":
        r = hi + lo
    elif op == "-":
        r = hi - lo
    elif op == "*":
        r = hi * lo
    elif op == "/":
        if lo == 0 or hi % lo:
            return None
        r = hi // lo
    else:
        raise ValueError(f"unknown operation {op!r}")
    return r if 1 <= r <= MAX_VALUE else None


def valid_steps(x: int, y: int) -> list[Step]:
    """The steps combining x and y: larger operand first, results positive, bounded and exact."""
    hi, lo = max(x, y), min(x, y)
    out = []
    for op in OPS:
        r = apply_op(hi, op, lo)
        if r is not None:
            out.append(Step(hi, op, lo, r))
    return out


def _paren(expr: str) -> str:
    return expr if expr.isdigit() else f"( {expr} )"


@functools.lru_cache(maxsize=4096)
def attempt_distribution(numbers: tuple[int, ...]) -> dict[Attempt, float]:
    """Probability of each attempt under the random search: at each step a pair of the current values uniformly,
    then a valid operation uniformly (dead ends, where no step is valid, carry no attempt)."""
    out: dict[Attempt, float] = {}

    def walk(items: list[tuple[int, str]], steps: tuple[Step, ...], p: float) -> None:
        if len(items) == 1:
            a = Attempt(steps, items[0][0], items[0][1])
            out[a] = out.get(a, 0.0) + p
            return
        pairs = list(itertools.combinations(range(len(items)), 2))
        for i, j in pairs:
            (x, ex), (y, ey) = items[i], items[j]
            choices = valid_steps(x, y)
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for s in choices:
                # The larger operand's expression goes first, as in the step line (equal values: either is right).
                e_hi, e_lo = (ex, ey) if x >= y else (ey, ex)
                walk(rest + [(s.result, f"{_paren(e_hi)} {s.op} {_paren(e_lo)}")], steps + (s,),
                     p / len(pairs) / len(choices))

    walk([(n, str(n)) for n in numbers], (), 1.0)
    return out


def success_probability(problem: CountdownProblem) -> float:
    """Chance that one random attempt reaches the target."""
    return sum(p for a, p in attempt_distribution(problem.numbers).items() if a.value == problem.target)


# ------------------------------------------------------------------------------------------------ problems

def split_of(text: str) -> str:
    """'heldout' for HELDOUT_PERCENT% of problem texts (by a stable hash), else 'train'."""
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


@functools.lru_cache(maxsize=1)
def problem_pool() -> tuple[CountdownProblem, ...]:
    """Every valid problem, in a fixed order: numbers 1..MAX_NUMBER, a reachable target in MIN_TARGET..MAX_VALUE that
    a random attempt reaches with probability in [MIN_SUCCESS, MAX_SUCCESS]."""
    out = []
    for numbers in itertools.combinations_with_replacement(range(1, MAX_NUMBER + 1), NUM_NUMBERS):
        by_value: dict[int, float] = {}
        for a, p in attempt_distribution(numbers).items():
            by_value[a.value] = by_value.get(a.value, 0.0) + p
        for target in sorted(by_value):
            if MIN_TARGET <= target <= MAX_VALUE and MIN_SUCCESS <= by_value[target] <= MAX_SUCCESS:
                out.append(CountdownProblem(numbers, target))
    attempt_distribution.cache_clear()   # the pool's 1,540 number sets would fill the cache for nothing
    return tuple(out)


def generate_problems(n: int, seed: int = 0, split: str = "train") -> list[CountdownProblem]:
    """n distinct problems of the given split, deterministic from seed (a seeded shuffle of the pool)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = [p for p in problem_pool() if split_of(p.text) == split]
    if n > len(pool):
        raise ValueError(f"countdown has {len(pool)} distinct {split} problems; asked for {n}")
    random.Random(f"countdown-{seed}-{split}").shuffle(pool)
    return pool[:n]


# ------------------------------------------------------------------------------------------------ traces

def _paragraph(a: Attempt, target: int, *, first: bool, keep: bool) -> str:
    lines = [s.line for s in a.steps]
    if keep:
        lines[0] = f"keep {lines[0]}"
    lines.append(f"{a.value} is {target} ." if a.value == target else f"{a.value} is not {target} .")
    text = "\n".join(lines)
    return text if first else f"Wait , {text}"


def _search(problem: CountdownProblem, rng: random.Random, p_backtrack: float,
            max_attempts: int) -> list[str] | None:
    """One run of the random search: its paragraphs, or None if it used max_attempts without success."""
    dist = attempt_distribution(problem.numbers)
    tried: set[Attempt] = set()
    paragraphs: list[str] = []
    prev: Attempt | None = None
    for k in range(max_attempts):
        left = [a for a in dist if a not in tried]
        if not left:
            return None
        keep = False
        if prev is not None and rng.random() < p_backtrack:
            same_start = [a for a in left if a.steps[0] == prev.steps[0]]
            if same_start:
                left, keep = same_start, True
        a = rng.choices(left, weights=[dist[x] for x in left])[0]
        tried.add(a)
        paragraphs.append(_paragraph(a, problem.target, first=(k == 0), keep=keep))
        if a.value == problem.target:
            paragraphs.append(f"The answer is \\boxed{{{a.expr}}} .")
            return paragraphs
        prev = a
    return None


def search_trace(problem: CountdownProblem, rng: random.Random, p_backtrack: float = 0.3,
                 max_attempts: int = MAX_ATTEMPTS) -> str:
    """A trace of the random search (see the module docstring): attempts until one checks, then the final answer.

    Runs that need more than max_attempts attempts are redrawn (the rare long searches; the attempts themselves never
    look at the solution)."""
    if success_probability(problem) == 0.0:
        raise ValueError(f"{problem.text}: no attempt reaches the target")
    for _ in range(1000):
        paragraphs = _search(problem, rng, p_backtrack, max_attempts)
        if paragraphs is not None:
            return "\n\n".join(paragraphs)
    raise ValueError(f"{problem.text}: no search of at most {max_attempts} attempts succeeded in 1000 draws")


# ------------------------------------------------------------------------------------------------ answers

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")


def extract_answer(text: str) -> str | None:
    """The expression in the last \\boxed{...} of text, spaces normalised ('( 7 * 3 ) + 9'), or None."""
    found = _BOXED.findall(text)
    if not found:
        return None
    toks = _tokens(found[-1])
    return None if toks is None else " ".join(toks)


def _tokens(expr: str) -> list[str] | None:
    toks, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            return None
        toks.append(m.group(1))
        pos = m.end()
    return toks


class _Invalid(Exception):
    """The expression breaks a rule (malformed, division by zero or not exact)."""


def evaluate(expr: str) -> tuple[int, list[int]]:
    """(value, numbers used) of an expression of integers, + - * / and parentheses with the usual precedence;
    ValueError if it is malformed or a division is by zero or not exact."""
    toks = _tokens(expr)
    if not toks:
        raise ValueError(f"not an expression: {expr!r}")
    used: list[int] = []
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def factor() -> int:
        t = peek()
        if t is None:
            raise _Invalid("ends early")
        if t == "(":
            take()
            v = expression()
            if peek() != ")":
                raise _Invalid("unclosed parenthesis")
            take()
            return v
        if t.isdigit():
            take()
            used.append(int(t))
            return int(t)
        raise _Invalid(f"unexpected {t!r}")

    def term() -> int:
        v = factor()
        while peek() in ("*", "/"):
            op, w = take(), factor()
            if op == "*":
                v *= w
            else:
                if w == 0 or v % w:
                    raise _Invalid("division by zero" if w == 0 else "division not exact")
                v //= w
        return v

    def expression() -> int:
        v = term()
        while peek() in ("+", "-"):
            op, w = take(), term()
            v = v + w if op == "+" else v - w
        return v

    try:
        value = expression()
        if pos != len(toks):
            raise _Invalid(f"unexpected {toks[pos]!r}")
    except _Invalid as exc:
        raise ValueError(f"{expr!r}: {exc}") from None
    return value, used


def check_expression(expr: str, problem: CountdownProblem) -> bool:
    """Whether expr uses the problem's numbers, each exactly once, and evaluates exactly to its target."""
    try:
        value, used = evaluate(expr)
    except ValueError:
        return False
    return value == problem.target and Counter(used) == Counter(problem.numbers)


def verify(completion_text: str, answer) -> float:
    """1.0 if the last \\boxed{} expression solves the problem (answer: a CountdownProblem or its text), else 0.0."""
    try:
        problem = answer if isinstance(answer, CountdownProblem) else parse_problem(answer)
    except ValueError:
        return 0.0
    expr = extract_answer(completion_text)
    return 1.0 if expr is not None and check_expression(expr, problem) else 0.0
