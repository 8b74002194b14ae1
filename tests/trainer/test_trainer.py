"""A few steps of the trainer on the tiny model: every mode, advantages as docs/algorithm.md says, packing, the
meta-prover."""
from __future__ import annotations

import math

import pytest
import torch

from mrt.episodes import make_segmenter
from mrt.meta_prover import BranchTag, MetaProver, episode_J, score_branches
from mrt.rollout import SamplingParams
from mrt.rollout_batch import micro_batches
from mrt.trainer import Trainer

from .trainer_helpers import expected_advantages, snapshot, tiny_config

MODES = [("grpo", "dense"), ("mrt", "dense"), ("mrt", "sum"), ("mrt", "termination_baseline")]


@pytest.mark.parametrize("algo,mode", MODES)
def test_step_of_each_mode(tmp_path, algo, mode):
    cfg = tiny_config(tmp_path, "--rl.algo", algo, "--rl.advantage_mode", mode, "--rollout.group_size", "6",
                      "--rollout.temperature", "1.2")
    tr = Trainer(cfg)
    before = snapshot(tr.model)

    batch, _ = tr.rollout(0)
    adv = tr.advantages(batch)
    if algo == "grpo":
        want = expected_advantages(batch, "dense", alpha=0.0)
    else:
        want = expected_advantages(batch, mode, alpha=cfg.rl.alpha)
    got = adv.advantages.tolist()
    assert len(got) == len(want) == batch.num_completion_tokens
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 1e-5 * (1 + abs(w))]
    assert not bad, f"advantage mismatches (token, got, want): {bad[:10]}"
    if algo == "mrt":
        assert sum(len(t.boundaries) for t in batch.traces) > 0, "no boundary: progress was not tested"
        # The meta-prover ran: one J_prompt per prompt shared by its samples, J in [0, 1] at every boundary.
        for t in batch.traces:
            assert 0.0 <= t.J_prompt <= 1.0 and all(0.0 <= j <= 1.0 for j in t.J)
            assert len(t.J) == len(t.boundaries)
        by_group = {}
        for t in batch.traces:
            by_group.setdefault(t.group, set()).add(t.J_prompt)
        assert all(len(v) == 1 for v in by_group.values())

    rec = tr.train_step()
    assert math.isfinite(rec["loss"]) and math.isfinite(rec["grad_norm"]) and rec["skipped"] == 0.0
    after = tr.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed after an optimizer step"
    for key in ("reward", "accuracy", "regret", "length", "entropy", "clip_fraction", "kl", "tokens_per_s",
                "time/rollout", "time/update", "prefix_cache_hit_rate"):
        assert key in rec and math.isfinite(rec[key]), key


def test_meta_prover_forks_at_offline_boundaries(tmp_path):
    """Online forks happen exactly at the offline segmenter's boundaries; m branches each, m from every prompt."""
    cfg = tiny_config(tmp_path, "--rollout.temperature", "1.3", "--episodes.max_episodes", "null")
    tr = Trainer(cfg)
    ex = [tr.train_data[i] for i in range(4)]
    m = cfg.meta_prover.m
    mp = MetaProver(make_segmenter(cfg.episodes), tr.tokenizer, termination_ids=tr.termination_ids, m=m,
                    answer_max_tokens=3, temperature=0.6, top_p=0.95, max_tokens=64, stop_token_ids=tr.stop_ids,
                    seed=3)
    outs = tr.engine.generate([e.prompt_ids for e in ex], SamplingParams(temperature=1.3, max_tokens=64, n=6, seed=5),
                              hook=mp).outputs
    seg = make_segmenter(cfg.episodes)
    n_bounds = 0
    for i, req in enumerate(outs):
        prompt_branches = [b for c in req.outputs for b in c.branches if b.tag == BranchTag.prompt()]
        assert len(prompt_branches) == m
        assert all(b.position == len(req.prompt_token_ids) for b in prompt_branches)
        for c in req.outputs:
            offline = seg.boundaries(c.token_ids, tr.tokenizer)
            # The trace's boundaries are its episode branches' positions (what build_batch reads).
            bounds, _ = episode_J(score_branches(c.branches, "", lambda text: 0.0), len(c.token_ids))
            assert bounds == offline, (i, c.index, tr.tokenizer.decode(c.token_ids))
            ep = [b for b in c.branches if b.tag.kind == "episode"]
            assert sorted(b.tag.position for b in ep) == sorted(x for x in offline for _ in range(m))
            for b in ep:
                assert b.position == len(req.prompt_token_ids) + b.tag.position
                assert b.continuation_token_ids == tr.termination_ids
                assert 1 <= len(b.token_ids) <= 3
            n_bounds += len(offline)
    assert n_bounds > 0, "no trace had a boundary: the test checked nothing (raise the temperature)"


def test_micro_batches_pack_without_padding(tmp_path):
    cfg = tiny_config(tmp_path, "--meta_prover.m", "2")
    tr = Trainer(cfg)
    batch, _ = tr.rollout(0)
    adv = tr.advantages(batch).advantages
    lens = [len(t.prompt_ids) + len(t.completion_ids) for t in batch.traces]
    budget = max(lens) + 5
    micro = micro_batches(batch, adv, budget)
    traces = batch.traces
    assert all(sum(mb.seq_lens) <= budget for mb in micro) and len(micro) > 1
    assert [L for mb in micro for L in mb.seq_lens] == lens
    k = 0
    for mb in micro:
        assert mb.input_ids.shape == mb.targets.shape == mb.mask.shape == mb.positions.shape
        start = 0
        for L in mb.seq_lens:
            t = traces[int(mb.seq_ids[start])]
            P, C = len(t.prompt_ids), len(t.completion_ids)
            assert mb.input_ids[start:start + L].tolist() == t.prompt_ids + t.completion_ids
            assert mb.positions[start:start + L].tolist() == list(range(L))
            # position p predicts token p + 1: completion tokens are the targets of positions P-1 .. L-2
            assert mb.targets[start + P - 1:start + L - 1].tolist() == t.completion_ids
            assert int(mb.mask[start:start + L].sum()) == C and not bool(mb.mask[start + L - 1])
            assert mb.old_logp[start + P - 1:start + L - 1].tolist() == pytest.approx(t.old_logp)
            assert torch.equal(mb.advantages[start + P - 1:start + L - 1], adv[k:k + C])
            k += C
            start += L
    # The rollout's old log-probs are the policy's: the first update's ratio is 1 up to rounding.
    rec = tr.train_step()
    assert abs(rec["approx_kl_old"]) < 1e-4 and rec["ratio_max"] < 1.01


def test_constant_aggregation_and_kl(tmp_path):
    cfg = tiny_config(tmp_path, "--rl.aggregation", "constant", "--rl.constant_normalizer", "64",
                      "--rl.kl_coef", "0.1", "--optim.micro_batch_tokens", "64")
    tr = Trainer(cfg)
    tr.train_step()
    rec = tr.train_step()           # the reference is the initial model: after one update the k3 KL is > 0
    assert math.isfinite(rec["loss"]) and rec["kl"] > 0.0
