"""Evaluation as the paper measures it: pass@1 and maj@k, accuracy at token budgets by budget forcing (forked from
each trace's cached prefix), normalised regret, extrapolation past the budget, a report and plots."""
from .budget_forcing import BudgetHook, BudgetTrace, generate_with_budgets
from .config import EvalConfig, parse_args
from .evaluate import evaluate_dataset
from .extrapolation import ExtrapolationCurve, extrapolate
from .metrics import (area_under_curve, cumulative_regret, maj_at_k, maj_curve, normalised_regret, pass_at_1,
                      pass_at_k, regret_per_episode)
from .plots import plot_results
from .problems import EvalDataset, get_verifier, load_dataset
from .report import markdown_table, write_report
from .run import run

__all__ = ["BudgetHook", "BudgetTrace", "EvalConfig", "EvalDataset", "ExtrapolationCurve", "area_under_curve",
           "cumulative_regret", "evaluate_dataset", "extrapolate", "generate_with_budgets", "get_verifier",
           "load_dataset", "maj_at_k", "maj_curve", "markdown_table", "normalised_regret", "parse_args", "pass_at_1",
           "pass_at_k", "plot_results", "regret_per_episode", "run", "write_report"]
