import math

import pytest
import torch

from mrt.loss import AGGREGATIONS, policy_loss


def _case():
    # Three tokens of trace 0, two of trace 1, one masked prompt token (inf log-prob must not leak).
    old = torch.tensor([-1.0, -1.0, -2.0, -0.5, -1.0, 0.0], dtype=torch.float64)
    ratio = torch.tensor([1.5, 0.7, 1.1, 0.5, 1.0, 1.0], dtype=torch.float64)
    logp = (old + ratio.log()).clone()
    logp[5] = -math.inf
    logp.requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, 9.0], dtype=torch.float64)
    mask = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)
    seq = torch.tensor([0, 0, 0, 1, 1, 1])
    return logp, old, adv, mask, seq


def test_hand_computed_token_mean():
    logp, old, adv, mask, seq = _case()
    loss, st = policy_loss(logp, old, adv, mask, seq, clip_low=0.2, clip_high=0.28)
    # Per token -min(r*A, clip(r)*A):
    #  r=1.5, A=1 : min(1.5, 1.28) = 1.28           (clipped high)
    #  r=0.7, A=-1: min(-0.7, -0.8) = -0.8          (clipped low)
    #  r=1.1, A=2 : min(2.2, 2.2) = 2.2
    #  r=0.5, A=-2: min(-1.0, -1.6) = -1.6          (clipped low)
    #  r=1.0, A=.5: 0.5
    want = -(1.28 - 0.8 + 2.2 - 1.6 + 0.5) / 5
    assert loss.item() == pytest.approx(want, abs=1e-12)
    assert st["clip_fraction"] == pytest.approx(3 / 5) and st["clip_high_fraction"] == pytest.approx(1 / 5)
    assert st["clip_low_fraction"] == pytest.approx(2 / 5) and st["kl"] == 0.0
    assert st["ratio_mean"] == pytest.approx((1.5 + 0.7 + 1.1 + 0.5 + 1.0) / 5)
    loss.backward()
    # Gradient w.r.t. logp: -A * r / 5 where unclipped, 0 where clipped or masked.
    want_g = torch.tensor([0, 0, -2.0 * 1.1 / 5, 0, -0.5 / 5, 0], dtype=torch.float64)
    assert torch.allclose(logp.grad, want_g, atol=1e-12), (logp.grad, want_g)


@pytest.mark.parametrize("agg, denom", [("token_mean", 5), ("seq_mean_token_sum", 2), ("constant", 2 * 10)])
def test_aggregations(agg, denom):
    logp, old, adv, mask, seq = _case()
    loss, _ = policy_loss(logp, old, adv, mask, seq, aggregation=agg, constant_normalizer=10)
    assert loss.item() == pytest.approx(-(1.28 - 0.8 + 2.2 - 1.6 + 0.5) / denom, abs=1e-12)
    assert set(AGGREGATIONS) == {"token_mean", "seq_mean_token_sum", "constant"}


def test_k3_kl():
    logp, old, adv, mask, seq = _case()
    ref = old + 0.3
    base, _ = policy_loss(logp, old, adv, mask, seq)
    loss, st = policy_loss(logp, old, adv, mask, seq, kl_coef=0.1, ref_logp=ref)
    d = (ref - logp.detach())[:5]
    k3 = (d.exp() - d - 1)
    assert st["kl"] == pytest.approx(k3.mean().item(), abs=1e-12)
    assert (k3 >= 0).all()
    assert loss.item() == pytest.approx(base.item() + 0.1 * k3.mean().item(), abs=1e-12)
    # k3 is zero when the policy equals the reference.
    _, st0 = policy_loss(old.clone(), old, adv, mask, seq, kl_coef=0.1, ref_logp=old)
    assert st0["kl"] == 0.0


def test_micro_batches_add_up(seed):
    T = 37
    logp = torch.randn(T, dtype=torch.float64).clamp(max=-0.01).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(T, dtype=torch.float64)
    adv = torch.randn(T, dtype=torch.float64)
    mask = torch.rand(T) > 0.2
    seq = torch.sort(torch.randint(0, 6, (T,))).values
    for agg in AGGREGATIONS:
        full, _ = policy_loss(logp, old, adv, mask, seq, aggregation=agg, constant_normalizer=16)
        n_tok, n_seq = int(mask.sum()), int(torch.unique(seq[mask]).numel())
        parts = sum(policy_loss(logp[s], old[s], adv[s], mask[s], seq[s], aggregation=agg, constant_normalizer=16,
                                num_tokens=n_tok, num_seqs=n_seq)[0] for s in (slice(0, 20), slice(20, T)))
        assert parts.item() == pytest.approx(full.item(), rel=1e-12, abs=1e-12), agg


def test_on_policy_gradient_is_policy_gradient(seed):
    # At ratio 1 (logp == old), d loss / d logp = -A / N for token_mean.
    T = 11
    old = torch.randn(T, dtype=torch.float64)
    logp = old.clone().requires_grad_(True)
    adv = torch.randn(T, dtype=torch.float64)
    mask = torch.ones(T, dtype=torch.bool)
    loss, st = policy_loss(logp, old, adv, mask, torch.zeros(T, dtype=torch.long))
    loss.backward()
    assert torch.allclose(logp.grad, -adv / T) and st["clip_fraction"] == 0.0


def test_bad_inputs():
    logp, old, adv, mask, seq = _case()
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(logp, old[:3], adv, mask, seq)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(logp, old, adv, mask, seq, aggregation="mean")
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, mask, seq, kl_coef=0.1)
    with pytest.raises(ValueError, match="constant_normalizer"):
        policy_loss(logp, old, adv, mask, seq, aggregation="constant")
    with pytest.raises(ValueError, match="seq_ids"):
        policy_loss(logp, old, adv, mask)
