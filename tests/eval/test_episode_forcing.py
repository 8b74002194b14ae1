"""The answer forced after each episode (mrt.eval.episode_forcing): the views over traces on hand-built outcomes,
the scoring of hand-built outputs, and the meta-prover forked at episode boundaries through the engine on the shipped
arithmetic model (equal to a fresh greedy generation from the cut prefix + termination text)."""
import json
import math
from pathlib import Path

import pytest
import torch

from mrt.eval.budget_forcing import BudgetTrace
from mrt.eval.episode_forcing import (EpisodeTrace, episode_progress, linearized_accuracy, progress_summary,
                                      score_episode_traces, share_with_episodes)
from mrt.meta_prover import BranchTag
from mrt.rollout.outputs import BranchOutput, CompletionOutput, RequestOutput, _Text

ROOT = Path(__file__).resolve().parents[2]

# E_0..E_k of four traces: one episode (right at its end), two (wrong, then right), three (right, wrong, right),
# two (0.5 then 0: the forced answers split, the trace ends wrong).
OUTCOMES = [[1.0], [0.0, 1.0], [1.0, 0.0, 1.0], [0.5, 0.0]]


def test_linearized_accuracy_holds_each_trace_at_its_own_end():
    # j = 0: (1 + 0 + 1 + 0.5) / 4; j = 1: (1 + 1 + 0 + 0) / 4; j = 2: (1 + 1 + 1 + 0) / 4, and it stays there.
    assert linearized_accuracy(OUTCOMES) == pytest.approx([0.625, 0.5, 0.75])
    assert linearized_accuracy(OUTCOMES, 5) == pytest.approx([0.625, 0.5, 0.75, 0.75, 0.75])
    assert share_with_episodes(OUTCOMES) == pytest.approx([1.0, 0.75, 0.25])
    with pytest.raises(ValueError):
        linearized_accuracy([])
    with pytest.raises(ValueError):
        linearized_accuracy([[1.0], []])


def test_episode_progress_and_its_distribution():
    prog = episode_progress(OUTCOMES)
    assert prog == [[1.0, 0.0, 1.0, 0.5], [1.0, -1.0, -0.5], [1.0]]
    # J_{-1} other than 0 shifts episode 0 only.
    assert episode_progress(OUTCOMES, j_minus_1=0.5)[0] == [0.5, -0.5, 0.5, 0.0]
    rows = progress_summary(prog + [[]])
    assert [r["n"] for r in rows] == [4, 3, 1, 0]
    assert rows[0]["mean"] == pytest.approx(0.625) and rows[1]["mean"] == pytest.approx(-0.5 / 3)
    # The classical quantile of [-1, -0.5, 1]: q10 and q50 -> -1 and -0.5, q90 -> 1.
    assert rows[1]["quantiles"]["0.1"] == -1.0 and rows[1]["quantiles"]["0.5"] == -0.5
    assert rows[1]["quantiles"]["0.9"] == 1.0
    assert rows[1]["share_positive"] == pytest.approx(1 / 3) and rows[1]["share_negative"] == pytest.approx(2 / 3)
    # Bins centred on -1, -0.75, ..., 1: episode 0's values 0, 0.5, 1, 1 fall in bins 4, 6, 8, 8.
    assert rows[0]["histogram"] == [0, 0, 0, 0, 1, 0, 1, 0, 2]
    assert sum(rows[1]["histogram"]) == 3
    assert rows[3]["n"] == 0 and math.isnan(rows[3]["mean"]) and sum(rows[3]["histogram"]) == 0


def _branch(boundary: int, answer: str, kind: str = "episode") -> BranchOutput:
    tag = BranchTag.episode(boundary) if kind == "episode" else BranchTag.budget(boundary)
    return BranchOutput(tag=tag, position=10 + boundary, continuation_token_ids=[1], token_ids=[7, 7],
                        logprobs=torch.zeros(2), finish_reason="length", text_=_Text(value=answer))


def test_score_episode_traces_reads_episode_branches_and_the_end():
    # A trace of 30 tokens with boundaries at 8 (forced answers: one right of two) and 20 (right); a budget branch at
    # 16 must not count as an episode; its end (the budget trace's last point) is wrong.
    comp = CompletionOutput(index=0, token_ids=[5] * 30, logprobs=torch.zeros(30), finish_reason="length",
                            num_cached_tokens=0, text_=_Text(value="..."),
                            branches=[_branch(8, "42}"), _branch(8, "41}"), _branch(20, "42}"),
                                      _branch(16, "42}", kind="budget")])
    bt = BudgetTrace(0, 0, 10, 30, [16, 30], J=[1.0, 0.0], tokens=[28.0, 42.0], answers=[[], []],
                     sources=["fork", "fork"])
    [[tr]] = score_episode_traces([RequestOutput([3] * 10, [comp])], [[bt]], "\\boxed{",
                                  lambda text, r: float(text.endswith("42}")))
    assert isinstance(tr, EpisodeTrace)
    assert tr.boundaries == [8, 20] and tr.J == [0.5, 1.0] and tr.end_J == 0.0
    assert tr.outcomes == [0.5, 1.0, 0.0] and tr.num_episodes == 3


def _arithmetic_model() -> Path:
    """The shipped SFT model of the arithmetic task (its own asset folder once the default moves to another task)."""
    for name in ("tiny_arithmetic_model", "tiny_model"):
        path = ROOT / "mrt" / "assets" / name
        info = path / "training_info.json"
        if info.exists() and json.loads(info.read_text()).get("task", "").endswith("arithmetic"):
            return path
    pytest.skip("no shipped arithmetic model")


def test_episode_forks_through_the_engine_equal_fresh_generation():
    from mrt.episodes import markers_segmenter
    from mrt.eval.budget_forcing import generate_with_budgets
    from mrt.eval.config import EvalConfig
    from mrt.eval.episode_forcing import episode_hook, episode_metrics
    from mrt.eval.evaluate import format_prompts
    from mrt.eval.problems import get_verifier, load_dataset
    from mrt.hub import load_checked_tokenizer, load_model
    from mrt.rollout import Engine, SamplingParams

    path = str(_arithmetic_model())
    model = load_model(path, dtype=torch.float32, device="cpu")
    tok = load_checked_tokenizer(path, model.config.vocab_size)
    engine = Engine(model, tok, block_size=16)
    ds = load_dataset("arithmetic:6")
    verifier = get_verifier("arithmetic")
    cfg = EvalConfig(models=["m"], data=["arithmetic:6"], budgets=[48, 96], samples=4, answer_tokens=8,
                     episode_markers=["Wait"], seed=3)
    prompts = format_prompts(tok, ds.problems, cfg)
    term = tok.encode(ds.termination_text, add_special_tokens=False)
    stop = [tok.eos_token_id]
    hook = episode_hook(cfg, tok, term, max_tokens=96, max_len=None, stop_token_ids=stop, seed=1)
    traces = [SamplingParams(temperature=0.9, max_tokens=96, n=4, seed=100 + i) for i in range(len(prompts))]
    meta = SamplingParams(temperature=0.0, max_tokens=8, n=1)

    def reward(text, i):
        return float(verifier.reward(text, ds.answers[i]))

    outs, budget_traces, stats = generate_with_budgets(engine, prompts, traces, [48, 96], term, ds.termination_text,
                                                       meta, reward, stop_token_ids=stop, extra_hooks=(hook,))
    ep = score_episode_traces(outs, budget_traces, ds.termination_text, reward)
    seg = markers_segmenter(["Wait"], 1)
    fresh = Engine(model, tok, block_size=16, enable_prefix_caching=False)
    multi, cuts, got = 0, [], []
    for r, row in enumerate(ep):
        for tr in row:
            comp = outs[r].outputs[tr.sample_index]
            # Online boundaries (the hook) are the offline segmenter's on the whole trace.
            assert tr.boundaries == seg.boundaries(comp.token_ids, tok)
            assert tr.end_J == budget_traces[r][tr.sample_index].J[-1]
            multi += tr.num_episodes > 1
            for br in (b for b in comp.branches if b.tag.kind == "episode"):
                assert br.position == len(prompts[r]) + br.tag.position
                cuts.append(list(prompts[r]) + list(comp.token_ids[:br.tag.position]) + term)
                got.append(br.text)
    assert multi > 0, "no trace with a second episode: the test checks nothing"
    # Each forked answer (sharing the trace's KV cache) is the greedy answer from the cut prefix computed afresh.
    want = [o.outputs[0].text for o in fresh.generate(cuts, meta).outputs]
    assert got == want
    m = episode_metrics(ep, cfg)
    # Past every trace's last episode, the linearized view is the accuracy at the largest budget.
    acc_at_max = sum(t.J[-1] for row in budget_traces for t in row) / sum(len(row) for row in budget_traces)
    assert m["linearized_accuracy"][-1] == pytest.approx(acc_at_max)
    assert m["episodes_per_trace"] == pytest.approx(sum(t.num_episodes for row in ep for t in row) / 24)


def test_episode_settings_from_the_command_line():
    from mrt.eval.config import EvalConfig, parse_args
    cfg = parse_args(["--model", "m", "--data", "arithmetic:4", "--episode-markers", "Wait,But wait",
                      "--episode-max", "3", "--episode-min-paragraphs", "2"])
    assert cfg.episode_markers == ["Wait", "But wait"] and cfg.episode_max == 3 and cfg.episode_min_paragraphs == 2
    assert parse_args(["--model", "m", "--data", "arithmetic:4"]).episode_markers == []   # off by default
    with pytest.raises(ValueError, match="episode_max"):
        EvalConfig(episode_max=0)
    with pytest.raises(ValueError, match="episode_min_paragraphs"):
        EvalConfig(episode_min_paragraphs=0)
    with pytest.raises(ValueError, match="episode_markers"):
        EvalConfig(episode_markers=[" "])
