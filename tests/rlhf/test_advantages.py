"""GAE, KL estimators, whitening, RLOO and PPO's clipped losses against their
definitions (float64 references, Hypothesis properties)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.plugins.rlhf.advantages import gae, kl_k1, kl_k3, masked_mean, rloo_advantages, whiten
from gaf.plugins.rlhf.losses import clipped_policy_loss, clipped_value_loss

small = st.floats(-5, 5, allow_nan=False)


@st.composite
def episodes(draw):
    """Right-padded (rewards, values, mask) for 1-4 sequences of 1-7 real tokens."""
    lengths = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    T = max(lengths) + draw(st.integers(0, 2))
    r = torch.tensor([[draw(small) for _ in range(T)] for _ in lengths], dtype=torch.float64)
    v = torch.tensor([[draw(small) for _ in range(T)] for _ in lengths], dtype=torch.float64)
    mask = torch.tensor([[t < n for t in range(T)] for n in lengths])
    return r, v, mask, lengths


@settings(max_examples=60, deadline=None)
@given(episodes(), st.floats(0, 1), st.floats(0, 1))
def test_gae_equals_its_direct_sum(ep, gamma, lam):
    r, v, mask, lengths = ep
    adv, ret = gae(r, v, mask, gamma, lam)
    for b, n in enumerate(lengths):
        vals = [float(v[b, t]) for t in range(n)] + [0.0]  # V = 0 after the last token
        deltas = [float(r[b, t]) + gamma * vals[t + 1] - vals[t] for t in range(n)]
        for t in range(n):
            want = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
            assert abs(float(adv[b, t]) - want) < 1e-9
            assert abs(float(ret[b, t]) - (want + vals[t])) < 1e-9
        assert float(adv[b, n:].abs().sum()) == 0.0 and float(ret[b, n:].abs().sum()) == 0.0


@settings(max_examples=40, deadline=None)
@given(episodes())
def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value(ep):
    r, v, mask, lengths = ep
    adv, _ = gae(r, v, mask, 1.0, 1.0)
    for b, n in enumerate(lengths):
        for t in range(n):
            to_go = float(r[b, t:n].sum())
            assert abs(float(adv[b, t]) - (to_go - float(v[b, t]))) < 1e-9


@given(st.lists(st.tuples(small, small), min_size=1, max_size=20))
def test_k3_is_never_negative_and_k1_is_the_log_ratio(pairs):
    logp = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    ref = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    assert (kl_k3(logp, ref) >= 0).all()
    assert torch.equal(kl_k1(logp, ref), logp - ref)
    # the closed form: e^{ref - logp} - 1 - (ref - logp)
    want = torch.exp(ref - logp) - 1 - (ref - logp)
    assert torch.allclose(kl_k3(logp, ref), want, atol=1e-9)


def test_k3_and_k1_are_unbiased_for_the_kl():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(6, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(6, dtype=torch.float64), 0)
    exact = float((p * (p.log() - q.log())).sum())
    k1 = float((p * kl_k1(p.log(), q.log())).sum())  # expectations under p, exactly
    k3 = float((p * kl_k3(p.log(), q.log())).sum())
    assert abs(k1 - exact) < 1e-12 and abs(k3 - exact) < 1e-12


@settings(max_examples=40, deadline=None)
@given(episodes())
def test_whiten_gives_zero_mean_unit_variance_over_real_tokens(ep):
    x, _, mask, _ = ep
    if int(mask.sum()) < 2 or float(x[mask].std()) < 1e-3:
        return
    w = whiten(x, mask)
    assert abs(float(masked_mean(w, mask))) < 1e-6
    assert abs(float(masked_mean(w ** 2, mask)) - 1) < 1e-4
    assert float(w[~mask].abs().sum()) == 0.0
    kept = whiten(x, mask, shift_mean=False)
    assert abs(float(masked_mean(kept, mask)) - float(masked_mean(x, mask))) < 1e-6


@given(st.lists(st.lists(small, min_size=2, max_size=6), min_size=1, max_size=4)
       .filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_rloo_is_reward_minus_the_mean_of_the_others(rows):
    r = torch.tensor(rows, dtype=torch.float64)
    a = rloo_advantages(r)
    k = r.shape[1]
    for p in range(r.shape[0]):
        for i in range(k):
            others = [float(r[p, j]) for j in range(k) if j != i]
            assert abs(float(a[p, i]) - (float(r[p, i]) - sum(others) / (k - 1))) < 1e-9


def _policy_grad(ratio: float, advantage: float) -> float:
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, _ = clipped_policy_loss(logp, old, torch.tensor([[advantage]], dtype=torch.float64),
                                  torch.ones(1, 1, dtype=torch.bool), clip=0.2)
    loss.backward()
    return float(logp.grad)


def test_clipped_gradient_vanishes_outside_the_trust_region_in_the_pushed_direction():
    # A > 0: past 1 + ε nothing more to gain; below it the gradient pushes log π up
    assert _policy_grad(1.5, 1.0) == 0.0
    assert _policy_grad(1.1, 1.0) < 0.0  # d(loss)/d(log π) = -A·ρ
    assert _policy_grad(0.5, 1.0) < 0.0  # under the region the surrogate is unclipped
    # A < 0: below 1 − ε nothing more to gain; above it the gradient pushes log π down
    assert _policy_grad(0.5, -1.0) == 0.0
    assert _policy_grad(0.9, -1.0) > 0.0
    assert _policy_grad(1.5, -1.0) > 0.0
    assert abs(_policy_grad(1.1, 2.0) - (-2.0 * 1.1)) < 1e-12


def test_clipped_losses_values_and_clipfrac():
    logp = torch.log(torch.tensor([[1.5, 1.0, 0.5]], dtype=torch.float64))
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    loss, frac = clipped_policy_loss(logp, torch.zeros_like(logp), adv, mask, clip=0.2)
    assert abs(float(loss) - (-(1.2) - 1.0) / 2) < 1e-12 and float(frac) == 0.5
    v = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    old = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    ret = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    vl = clipped_value_loss(v, old, ret, torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    assert abs(float(vl) - 0.5 * (1.0 + 9.0) / 2) < 1e-12  # max picks the unclipped here
