"""The meta-prover hook's host time in the plan: hook_seq_s per trace step the engine still shows to the hook.

The engine skips a trace once the hook's `wake_at` says it cannot fork before the trace's end: the markers
segmenter after `max_episodes - 1` boundaries, the fixed segmenter between chunk ends. The simulated hook marks the
same traces, and the pricing runner charges only the steps a trace is shown (hook_seq_s = 1 s: seconds = steps).
"""
import pytest

from mrt.config import load_config
from mrt.plan.memory import plan_memory
from mrt.plan.profiles import H100, with_rates
from mrt.plan.shape import load_shape
from mrt.plan.step import simulate_rollout
from mrt.plan.workload import TraceScript, Workload

# Two prompts x 2 traces: (prompt, completion, boundaries).
TRACES = [[TraceScript(20, 40, [10, 30]), TraceScript(20, 57, [5])],
          [TraceScript(33, 64, []), TraceScript(33, 11, [3, 7])]]
# A trace is shown at each of its steps, one per completion token; a group's second trace joins its first and draws
# its first token from the first's prefill, outside the runner's batch, so that step goes unpriced (2 in all).
ALL_STEPS = 40 + 57 + 64 + 11 - 2


def _hook_seconds(small_model_dir, *extra):
    cfg = load_config(None, ["--model.path", small_model_dir, "--rollout.group_size", "2",
                             "--rollout.max_new_tokens", "64", "--meta_prover.m", "3"] + list(extra))
    shape = load_shape(small_model_dir, cfg.model.dtype)
    mem = plan_memory(cfg, shape, H100, 1, 26)
    prof = with_rates(H100, hook_seq_s=1.0, hook_len_s=0.0)
    wl = Workload(TRACES, termination_tokens=5, answer_tokens=4, source="test")
    return simulate_rollout(cfg, shape, prof, wl, mem, meta=True).hook_seconds


@pytest.mark.parametrize("max_episodes", ["null", "4"])
def test_every_step_while_a_boundary_can_come(small_model_dir, max_episodes):
    # max_episodes 4: at most 3 boundaries, and no trace has 3, so none is ever closed.
    assert _hook_seconds(small_model_dir, "--episodes.max_episodes", max_episodes) == ALL_STEPS


def test_closed_traces_are_not_shown(small_model_dir):
    # max_episodes 2: a trace closes with its first boundary b, forked once it has b + 2 tokens (MARKER_LAG):
    # 12 of 40, 7 of 57, all 64 (no boundary), 5 of 11 steps; less the two unpriced first steps.
    assert _hook_seconds(small_model_dir, "--episodes.max_episodes", "2") == 12 + 7 + 64 + 5 - 2


def test_fixed_segmenter_wakes_only_at_chunk_ends(small_model_dir):
    # Shown on its first step (the bare-prompt forks' turn) and priced as never again: 2 priced first steps.
    assert _hook_seconds(small_model_dir, "--episodes.segmenter", "fixed") == 2
