"""Budget forcing through the engine: one generation per trace, meta-prover answers forked from its cached prefix,
equal to a fresh greedy generation from the cut prefix + termination text; and the whole CLI on a tiny model."""
import json

import pytest
import torch

from mrt.eval import __main__ as cli
from mrt.eval.budget_forcing import generate_with_budgets
from mrt.eval.extrapolation import extrapolate


def _engine(path, **kw):
    from transformers import AutoTokenizer

    from mrt.models import CausalLM
    from mrt.rollout import Engine

    model = CausalLM.from_pretrained(str(path), dtype=torch.float32, device="cpu")
    tok = AutoTokenizer.from_pretrained(str(path))
    return Engine(model, tok, block_size=4, num_blocks=256, **kw), tok


def test_budget_forcing_equals_fresh_generation(tiny_model_dir, seed):
    from mrt.rollout import SamplingParams

    engine, tok = _engine(tiny_model_dir)
    prompts = [tok.encode(p) for p in ["12 + 3 - 4 =", "7 - 2", "x"]]
    term_text = "\nSo: \\boxed{"
    term = tok.encode(term_text)
    budgets = [1, 5, 6, 13, 21]   # inside and at the end of 4-token blocks; 21 is the trace's last token
    traces = SamplingParams(temperature=1.0, max_tokens=21, n=2, seed=seed % 10_000)
    meta = SamplingParams(temperature=0.0, max_tokens=6, n=1)
    answers_seen = []

    def reward(text, i):  # records what was checked; the reward itself is exercised elsewhere
        answers_seen.append(text)
        return float(text.endswith("1"))

    outs, results, stats = generate_with_budgets(engine, prompts, traces, budgets, term, term_text, meta, reward,
                                                 stop_token_ids=[tok.eos_token_id])
    # One generation: every budget the traces reached was forked (no fallback regeneration), and a branch computes
    # only its termination text (plus at most the parent's last, not yet computed token), never the prefix again.
    assert stats["forks"] > 0 and stats["fallbacks"] == 0, stats
    assert stats["engine"].branch_prompt_tokens_computed <= stats["forks"] * (len(term) + 1), stats["engine"]
    fresh_engine, _ = _engine(tiny_model_dir, enable_prefix_caching=False)
    checked = 0
    for r, row in enumerate(results):
        assert [t.sample_index for t in row] == [0, 1]
        for tr in row:
            comp = outs[r].outputs[tr.sample_index]
            for j, b in enumerate(budgets):
                if tr.sources[j] == "own":
                    assert comp.finish_reason == "stop" and len(comp.token_ids) <= b
                    continue
                cut = list(prompts[r]) + list(comp.token_ids[:b]) + term
                want = fresh_engine.generate([cut], meta).outputs[0].outputs[0].text
                got = tr.answers[j]
                assert got == [term_text + want], (f"request {r} sample {tr.sample_index} budget {b} "
                                                   f"({tr.sources[j]}): forked {got!r} != fresh {want!r}")
                assert tr.J[j] == float(want.endswith("1"))
                assert tr.tokens[j] == len(prompts[r]) + b + len(fresh_engine.generate([cut], meta).outputs[0]
                                                                  .outputs[0].token_ids)
                checked += 1
    assert checked >= len(prompts) * 2, checked


def test_extrapolation_rounds(tiny_model_dir):
    from mrt.rollout import SamplingParams

    engine, tok = _engine(tiny_model_dir)
    prompts = [tok.encode("3 + 4"), tok.encode("9 - 1 + 2")]
    # Stop strings of one common character make rounds end early, so markers get appended.
    curve = extrapolate(engine, tok, prompts, lambda text, i: float("1" in text), rounds=3, round_tokens=8,
                        eval_every=2, markers=["Wait", "But wait"], think_end=["e", "a", " "],
                        termination_text="\n\\boxed{", trace_params=SamplingParams(temperature=0.0),
                        meta_params=SamplingParams(temperature=0.0, max_tokens=4),
                        stop_token_ids=[tok.eos_token_id])
    assert curve.rounds == [0, 2, 3]
    assert all(0.0 <= a <= 1.0 for a in curve.accuracy)
    assert curve.tokens == sorted(curve.tokens) and curve.tokens[-1] <= 4 * (8 + 3)


def test_cli_end_to_end(tiny_model_dir, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a} + {a}", "a": str(2 * a)}) + "\n" for a in range(3)))
    out = tmp_path / "out"
    rc = cli.main(["--model", f"tiny={tiny_model_dir}", "--model", f"again={tiny_model_dir}", "--data", str(data),
                   "--prompt-column", "q", "--answer-column", "a", "--budgets", "4,10", "--samples", "2",
                   "--temperature", "1.0", "--answer-tokens", "4", "--curve-every", "3", "--verifier", "arithmetic",
                   "--termination-text", "\\boxed{", "--extrapolation-rounds", "1", "--round-tokens", "6",
                   "--no-chat-template", "--no-progress", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "results.json").read_text())
    res = saved["results"]
    assert [r["model"] for r in res] == ["tiny", "again"]
    for r in res:
        assert r["num_problems"] == 3 and len(r["maj@k"]) == 2 and r["forks"] > 0
        assert r["curve"]["output_tokens"] == [3, 4, 6, 9, 10]
        assert all(0.0 <= x <= 1.0 for x in r["accuracy_at_budget"] + r["normalised_regret_at_budget"])
        assert r["extrapolation"]["rounds"] == [0, 1]
    # The same model, the same seed: the same numbers.
    assert res[0]["accuracy_at_budget"] == res[1]["accuracy_at_budget"]
    assert "| tiny | problems |" in (out / "results.md").read_text()
    assert (out / "problems.png").stat().st_size > 10_000


def test_eval_gives_every_prompt_its_own_seed():
    """One seed for all prompts would give sample j of every problem the same noise stream: the dataset's accuracy
    would hang on a few draws. The eval's trace params carry one derived seed per prompt."""
    from mrt.eval.config import EvalConfig
    from mrt.eval.evaluate import _sampling_params
    cfg = EvalConfig(models=["m"], data=["arithmetic:4"], samples=3, temperature=0.7, seed=11, budgets=[8])
    traces, meta = _sampling_params(cfg, 5)
    assert len(traces) == 5 and len({p.seed for p in traces}) == 5
    assert all(p.n == 3 and p.temperature == 0.7 for p in traces) and meta.seed not in {p.seed for p in traces}
    assert [p.seed for p in _sampling_params(cfg, 5)[0]] == [p.seed for p in traces]
