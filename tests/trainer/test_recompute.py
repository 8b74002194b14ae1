"""rl.recompute_old_logp: old log-probs from the training forward (no grad, before the update); approx_kl_old is the
engine-vs-training mismatch with and without it."""
import math

import torch

from mrt_kernels import fused_linear_logprobs_ref
from mrt.models import packed_metadata
from mrt.rollout_batch import micro_batches
from mrt.trainer import Trainer
from mrt.update import recompute_old_logp, run_update

from .trainer_helpers import tiny_config


def _batch(tr):
    batch, _ = tr.rollout(0)
    return batch, micro_batches(batch, tr.advantages(batch).advantages, 256)


def test_recompute_replaces_engine_logprobs_by_the_training_forward(tmp_path):
    tr = Trainer(tiny_config(tmp_path))
    batch, micro = _batch(tr)
    engine = [mb.old_logp.clone() for mb in micro]
    diff, n = recompute_old_logp(tr.train_model, tr.model, micro, temperature=tr.cfg.rollout.temperature)
    assert n == batch.num_completion_tokens and n > 0
    total = 0.0
    for mb, old in zip(micro, engine):
        with torch.no_grad():
            h = tr.model(mb.input_ids, mb.positions, packed_metadata(mb.seq_lens, torch.device("cpu")))
            want = fused_linear_logprobs_ref(h.double(), tr.model.lm_head_weight.double(), mb.targets,
                                             temperature=tr.cfg.rollout.temperature)
        torch.testing.assert_close(mb.old_logp[mb.mask].double(), want[mb.mask], rtol=0, atol=1e-5)
        assert torch.all(mb.old_logp[~mb.mask] == 0)
        total += float((old - want.float())[mb.mask].sum())
    assert math.isclose(diff, total, rel_tol=1e-3, abs_tol=1e-4)
    # fp32 on both paths: the engine's log-probs agree with the training forward's to float rounding.
    assert abs(diff) / n < 1e-4
    # The first epoch's ratio is then 1 on every token: no clipping, ratio_mean 1.
    stats = run_update(tr.train_model, tr.model, tr.optimizer, micro, tr.update_settings, num_tokens=n,
                       num_seqs=len(batch))
    assert stats.tokens == n and stats.clip_fraction == 0.0 and abs(stats.ratio_mean / n - 1.0) < 1e-6
    assert abs(stats.approx_kl_old / n) < 1e-6


def test_approx_kl_old_is_logged_either_way(tmp_path):
    recs = {}
    for flag in ("false", "true"):
        tr = Trainer(tiny_config(tmp_path / flag, "--rl.recompute_old_logp", flag))
        recs[flag] = tr.train_step()
    for rec in recs.values():
        assert math.isfinite(rec["approx_kl_old"]) and abs(rec["approx_kl_old"]) < 1e-4
    # Same seed, same traces: the engine-vs-training mismatch is the same measure with and without the recompute.
    assert math.isclose(recs["true"]["approx_kl_old"], recs["false"]["approx_kl_old"], rel_tol=1e-3, abs_tol=1e-7)
