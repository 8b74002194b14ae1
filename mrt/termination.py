"""Termination texts of the meta-prover: one definition per model family, shared by training and evaluation.

The meta-prover is the policy fed `context + termination text` and sampled for a short answer (docs/algorithm.md).
Training (`meta_prover.termination_text`) and evaluation (`python -m mrt.eval --termination-text`) both take a name
from `TERMINATION_TEXTS` or a literal text; a name resolves to the same string in both, so training J and eval J /
regret measure the same meta-prover.

- `r1`: the paper's text for R1-style chat models (DeepSeek-R1-Distill-Qwen, DeepScaleR), closing the thinking block
  and opening a boxed answer. Training forks it after a blank line (an episode boundary); evaluation forks it at a
  token budget, possibly mid-paragraph, with the same text (so the two J's are comparable).
- `arithmetic`: the synthetic task of the embedded default (`mrt.tasks.arithmetic`).
- `countdown`: the search task (`mrt.tasks.countdown`); the same text as `arithmetic`, its answer an expression.
"""
from __future__ import annotations

from .tasks.arithmetic import TERMINATION_TEXT as ARITHMETIC_TERMINATION_TEXT
from .tasks.countdown import TERMINATION_TEXT as COUNTDOWN_TERMINATION_TEXT

R1_TERMINATION_TEXT = ("Time is up.\n\nGiven the time I've spent and the approaches I've tried, I should stop thinking "
                       "and formulate a final answer based on what I already have.\n</think>\n\n"
                       "The final answer is $\\boxed{")

TERMINATION_TEXTS: dict[str, str] = {
    "r1": R1_TERMINATION_TEXT,
    "arithmetic": ARITHMETIC_TERMINATION_TEXT,
    "countdown": COUNTDOWN_TERMINATION_TEXT,
}


def resolve_termination_text(value: str) -> str:
    """A name in TERMINATION_TEXTS -> its text; any other string is the text itself."""
    return TERMINATION_TEXTS.get(value, value)
