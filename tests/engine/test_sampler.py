"""Sampler: greedy, temperature, top-k, top-p, seeds, and the returned log-probs (float64 reference)."""
import torch

from mrt.rollout.sampler import draw_key, key_uniform, sample


def _ref_logprobs(logits, temps, tokens):
    t = torch.tensor([x if x > 0 else 1.0 for x in temps], dtype=torch.float64)
    lp = torch.log_softmax(logits.double() / t[:, None], dim=-1)
    return lp.gather(-1, tokens[:, None]).squeeze(-1)


def test_greedy_and_logprobs(seed):
    logits = torch.randn(5, 37) * 3
    temps = [0.0, 0.7, 1.0, 0.0, 1.3]
    tokens, logprobs = sample(logits, temps, [1.0] * 5, [None] * 5, [None] * 5)
    for b in (0, 3):
        assert tokens[b] == logits[b].argmax()
    ref = _ref_logprobs(logits, temps, tokens)
    # fp32 log_softmax against float64: a few ulps of values of order 10.
    torch.testing.assert_close(logprobs.double(), ref, atol=1e-5, rtol=0)


def test_draws_follow_the_tempered_distribution(seed):
    V, draws, T = 6, 20000, 0.8
    logits = torch.randn(1, V)
    tokens, _ = sample(logits.expand(draws, V).contiguous(), [T] * draws, [1.0] * draws, [None] * draws,
                       [None] * draws)
    freq = torch.bincount(tokens, minlength=V).double() / draws
    p = torch.softmax(logits[0].double() / T, -1)
    sigma = (p * (1 - p) / draws).sqrt()
    assert ((freq - p).abs() <= 6 * sigma + 1e-9).all(), f"freq {freq.tolist()} vs p {p.tolist()}"


def test_top_k_and_top_p_restrict_the_support(seed):
    V, draws = 50, 4000
    logits = torch.randn(1, V).expand(draws, V).contiguous()
    order = logits[0].argsort(descending=True)
    tokens, logprobs = sample(logits, [1.0] * draws, [1.0] * draws, [3] * draws, [None] * draws)
    assert set(tokens.tolist()) <= set(order[:3].tolist())
    # The log-prob is taken before truncation.
    torch.testing.assert_close(logprobs.double(), _ref_logprobs(logits, [1.0] * draws, tokens), atol=1e-5, rtol=0)
    p = torch.softmax(logits[0].double(), -1)[order]
    top_p = float(p[:2].sum() - 1e-4)           # the second token crosses top_p: exactly two kept
    tokens, _ = sample(logits, [1.0] * draws, [top_p] * draws, [None] * draws, [None] * draws)
    assert set(tokens.tolist()) == set(order[:2].tolist())


def test_seeded_rows_do_not_depend_on_the_batch(seed):
    V = 40
    row = torch.randn(1, V)
    keys = [draw_key(seed, draw) for draw in range(8)]
    alone = [sample(row, [1.0], [0.9], [None], [key])[0].item() for key in keys]
    batched = []
    for key in keys:
        logits = torch.cat([torch.randn(2, V), row, torch.randn(1, V)])
        tokens, _ = sample(logits, [1.0] * 4, [1.0, 1.0, 0.9, 1.0], [None] * 4, [None, None, key, None])
        batched.append(tokens[2].item())
    assert alone == batched
    assert len(set(alone)) > 1                   # successive draws of one stream differ


def test_key_uniforms_are_uniform_and_decorrelated(seed):
    # U(0, 1) has mean 1/2 and variance 1/12; successive draws of a stream and neighbouring streams are uncorrelated.
    n_streams, n_draws = 64, 512
    u = torch.tensor([[key_uniform(draw_key(seed * 1000 + s, d)) for d in range(n_draws)] for s in range(n_streams)],
                     dtype=torch.float64)
    n = u.numel()
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(u.mean().item() - 0.5) < 6 * (1 / 12 / n) ** 0.5
    assert abs(u.var().item() - 1 / 12) < 6 * (1 / 180 / n) ** 0.5           # Var of the sample variance of U(0,1)
    for a, b in [(u[:, :-1], u[:, 1:]), (u[:-1], u[1:])]:
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(corr) < 6 / a.numel() ** 0.5


def test_a_seeded_draw_is_the_inverse_cdf_of_its_key_uniform(seed):
    """Token = first i whose running mass exceeds u * total, with the kept (top-p) mass only: checked in float64."""
    V = 97
    logits = torch.randn(6, V) * 2
    temps, top_ps = [0.7, 1.0, 1.3, 0.5, 1.0, 0.9], [1.0, 0.8, 0.95, 1.0, 0.3, 0.6]
    keys = [draw_key(seed, d) for d in range(6)]
    tokens, _ = sample(logits, temps, top_ps, [None] * 6, keys)
    for b in range(6):
        # the sampler's own fp32 probabilities (so a u within rounding of a boundary cannot flip the check)
        p = torch.log_softmax(logits[b:b + 1] / torch.tensor([temps[b]])[:, None], -1).exp()[0].double()
        order = p.argsort(descending=True)
        keep = torch.zeros(V, dtype=torch.bool)
        keep[order[:int(((p[order].cumsum(0) - p[order]) < top_ps[b]).sum())]] = True
        cdf = torch.where(keep, p, torch.zeros_like(p)).cumsum(0)
        expected = int((cdf <= key_uniform(keys[b]) * cdf[-1]).sum())
        assert keep[tokens[b]] and int(tokens[b]) == expected, (b, int(tokens[b]), expected)


def test_top_k_top_p_mask_matches_a_sorted_reference(seed):
    """The threshold mask keeps exactly the tokens a per-row sort-and-cut keeps (no ties in random probs)."""
    from mrt.rollout.sampler import _mask_top_k_top_p
    B, V = 9, 301
    probs = torch.softmax(torch.randn(B, V) * 2, -1)
    top_k = torch.tensor([1, 5, 300, 301, 7, 2, 50, 301, 301])
    top_p = torch.tensor([1.0, 0.5, 0.9, 0.3, 1.0, 0.99, 0.2, 1e-6, 1.0])
    masked = _mask_top_k_top_p(probs.clone(), top_k, top_p)      # masks in place
    for b in range(B):
        order = probs[b].double().argsort(descending=True)
        mass_before = probs[b].double()[order].cumsum(0) - probs[b].double()[order]
        n_keep = min(int(top_k[b]), int((mass_before < float(top_p[b])).sum()))
        expected = torch.zeros(V, dtype=torch.bool)
        expected[order[:max(n_keep, 1)]] = True
        assert torch.equal(masked[b] > 0, expected), b
        torch.testing.assert_close(masked[b][expected], probs[b][expected], rtol=0, atol=0)
