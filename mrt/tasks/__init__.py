"""Synthetic tasks with verifiable answers, for the embedded default and tests."""
from .arithmetic import (ArithmeticProblem, extract_answer, generate_problems, make_problem, reference_trace,
                         split_of, verify)

__all__ = ["ArithmeticProblem", "extract_answer", "generate_problems", "make_problem", "reference_trace", "split_of",
           "verify"]
