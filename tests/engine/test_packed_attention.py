"""Packed causal attention (training and scoring mode): the right-padded single call and the per-sequence calls
against an explicit float64 softmax, forward and backward, with GQA and odd lengths (a 1-token sequence included).
Tolerance: twice the error of the same explicit attention run in float32, plus 8 float32 ulps of the largest value
(the explicit softmax is now and then luckily accurate on a gradient, and SDPA's blocked backward sums in another
order: torch's own per-sequence call then lands at up to 1.4x the explicit error)."""
from __future__ import annotations

import pytest
import torch

from mrt.models import packed_metadata
from mrt.models.attention import attention_padded, attention_per_sequence, packed_attention


def explicit_attention(q, k, v, spans, scale):
    """softmax(q k^T * scale + causal mask) v per span, GQA by repeating K/V heads; in q's dtype."""
    g = q.shape[1] // k.shape[1]
    outs = []
    for a, b in spans:
        qs, ks, vs = q[a:b].transpose(0, 1), k[a:b].repeat_interleave(g, 1).transpose(0, 1), \
            v[a:b].repeat_interleave(g, 1).transpose(0, 1)                           # (H, L, D)
        s = qs @ ks.transpose(1, 2) * scale
        mask = torch.ones(b - a, b - a, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
        outs.append((s.softmax(-1) @ vs).transpose(0, 1))
    return torch.cat(outs)


def _inputs(lens, hq, hkv, d, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(lens)
    q, k, v = (torch.randn(n, h, d, generator=g, dtype=torch.float64) for h in (hq, hkv, hkv))
    up = torch.randn(n, hq, d, generator=g, dtype=torch.float64)       # the upstream gradient
    spans = [(a, b) for a, b in zip(*(lambda c: (c[:-1], c[1:]))(
        [0] + torch.tensor(lens).cumsum(0).tolist())) if b > a]
    return q, k, v, up, spans


def _value_and_grads(fn, q, k, v, up, spans, scale, dtype):
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, spans, scale)
    out.backward(up.to(dtype))
    return [t.detach().double() for t in (out, q.grad, k.grad, v.grad)]


@pytest.mark.parametrize("lens,hq,hkv,d", [([7, 1, 12, 9, 10], 4, 2, 16),     # padded: 5 x 12 <= 2 x 39
                                           ([5, 0, 3, 6], 6, 6, 8),            # an empty sequence, no GQA
                                           ([2, 40, 3], 4, 1, 32)])            # padding would triple the work
def test_padded_and_per_sequence_match_float64(lens, hq, hkv, d, seed):
    q, k, v, up, spans = _inputs(lens, hq, hkv, d, seed)
    scale = d ** -0.5
    ref = _value_and_grads(explicit_attention, q, k, v, up, spans, scale, torch.float64)
    eager32 = _value_and_grads(explicit_attention, q, k, v, up, spans, scale, torch.float32)
    for fn in (attention_padded, attention_per_sequence):
        got = _value_and_grads(fn, q, k, v, up, spans, scale, torch.float32)
        for name, g_, e_, r_ in zip(("out", "dq", "dk", "dv"), got, eager32, ref):
            bound = 2 * (e_ - r_).abs().max().item() + 8 * torch.finfo(torch.float32).eps * r_.abs().max().item()
            err = (g_ - r_).abs().max().item()
            assert err <= bound, f"{fn.__name__} {name}: max err {err:.3e} > {bound:.3e}"


def test_packed_attention_picks_the_padded_call_only_when_padding_is_cheap(monkeypatch, seed):
    calls = []
    import mrt.models.attention as attention
    for name in ("attention_padded", "attention_per_sequence"):
        real = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    for lens, want in [([7, 1, 12, 9, 10], "attention_padded"), ([2, 40, 3], "attention_per_sequence"),
                       ([9], "attention_per_sequence")]:
        q, k, v, _, spans = _inputs(lens, 4, 2, 16, seed)
        out = packed_attention(q.float(), k.float(), v.float(), packed_metadata(lens), spans, 0.25)
        assert out.shape == (sum(lens), 4, 16) and calls[-1] == want
