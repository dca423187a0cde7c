"""DPO-family losses: float64 references, algebraic properties, stability, errors."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaf.plugins.preference import losses as L

F64 = torch.float64
DTYPES = st.sampled_from([torch.float32, torch.float64])
BETAS = st.floats(0.01, 10.0)
EPS = st.floats(0.0, 0.49)
EXTREME = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
LOGP = st.floats(-1e4, 0.0, allow_nan=False, allow_infinity=False)
MODERATE = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)


def t(values, dtype=F64, grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def close(a: float, b: float, tol: float = 1e-10) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


# --- independent float64 references (plain `math`, naive formulas) -------------------

def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def ref_dpo(h, b):
    return -math.log(sig(b * h))


def ref_cdpo(h, b, e):
    return -(1 - e) * math.log(sig(b * h)) - e * math.log(sig(-b * h))


def ref_robust(h, b, e):
    return (-(1 - e) * math.log(sig(b * h)) + e * math.log(sig(-b * h))) / (1 - 2 * e)


def ref_ipo(h, b):
    return (h - 1 / (2 * b)) ** 2


def ref_hinge(h, b):
    return max(0.0, 1 - b * h)


def ref_simpo(mw, ml, b, g):
    return -math.log(sig(b * mw - b * ml - g))


def ref_log_odds(m):
    p = math.exp(min(m, -1e-6))
    return math.log(p / (1 - p))


def ref_orpo(mw, ml, lam):
    return -mw - lam * math.log(sig(ref_log_odds(mw) - ref_log_odds(ml)))


def ref_kto(r, d, z0, b, ld, lu):
    return ld * (1 - sig(b * (r - z0))) if d else lu * (1 - sig(b * (z0 - r)))


def ref_pl(row, b):
    total = 0.0
    for k in range(len(row) - 1):
        total -= b * row[k] - math.log(sum(math.exp(b * x) for x in row[k:]))
    return total


RNG = random.Random(1234)
HS = [0.0, 1.0, -1.0, 0.37, -2.5, 12.0, -30.0] + [RNG.uniform(-20, 20) for _ in range(8)]
BS = [0.1, 0.5, 1.0, 2.0] + [RNG.uniform(0.05, 3) for _ in range(3)]
MEANS = [-1e-3, -0.05, -0.7, -1.0, -3.0, -12.0] + [-RNG.uniform(1e-3, 15) for _ in range(6)]


def test_pairwise_losses_match_float64_references():
    h = t(HS)
    for b in BS:
        for got, want in [(L.dpo_loss(h, b), [ref_dpo(x, b) for x in HS]),
                          (L.ipo_loss(h, b), [ref_ipo(x, b) for x in HS]),
                          (L.hinge_loss(h, b), [ref_hinge(x, b) for x in HS])]:
            assert got.dtype == F64 and got.shape == h.shape
            for g, w in zip(got.tolist(), want):
                assert close(g, w), (b, g, w)
        for e in [0.0, 0.1, 0.25, 0.4]:
            for g, w in zip(L.cdpo_loss(h, b, e).tolist(), [ref_cdpo(x, b, e) for x in HS]):
                assert close(g, w), (b, e, g, w)
            for g, w in zip(L.robust_loss(h, b, e).tolist(), [ref_robust(x, b, e) for x in HS]):
                assert close(g, w), (b, e, g, w)


def test_margin_matches_reference():
    vals = [(RNG.uniform(-50, 0), RNG.uniform(-50, 0), RNG.uniform(-50, 0), RNG.uniform(-50, 0))
            for _ in range(10)]
    c, r, rc, rr = (t(list(col)) for col in zip(*vals))
    for g, (a, b, x, y) in zip(L.margin(c, r, rc, rr).tolist(), vals):
        assert close(g, (a - x) - (b - y))
    for g, (a, b, _, _) in zip(L.margin(c, r).tolist(), vals):
        assert close(g, a - b)


def test_length_normalised_losses_match_references():
    pairs = [(RNG.choice(MEANS), RNG.choice(MEANS)) for _ in range(12)] + [(-0.2, -3.0),
                                                                           (-3.0, -0.2)]
    mw, ml = t([p[0] for p in pairs]), t([p[1] for p in pairs])
    for g, m in zip(L.log_odds(t(MEANS)).tolist(), MEANS):
        assert close(g, ref_log_odds(m))
    for b, gamma in [(2.0, 1.0), (0.5, 0.0), (10.0, 3.0)]:
        for g, (a, c) in zip(L.simpo_loss(mw, ml, b, gamma).tolist(), pairs):
            assert close(g, ref_simpo(a, c, b, gamma))
    for lam in [0.1, 1.0]:
        for g, (a, c) in zip(L.orpo_loss(mw, ml, lam).tolist(), pairs):
            assert close(g, ref_orpo(a, c, lam))


def test_log_odds_clamps_at_minus_1e_6():
    want = ref_log_odds(-1e-6)
    assert math.isclose(want, math.log(1e-6) * -1, rel_tol=1e-5)  # ≈ 13.8
    for m in [0.0, -1e-9, 0.5]:
        x = t([m], grad=True)
        out = L.log_odds(x)
        assert close(out.item(), want)
        out.sum().backward()
        assert x.grad.item() == 0.0
    # below the clamp the gradient is 1/(1-p): finite and large near 0
    x = t([-1e-3], grad=True)
    L.log_odds(x).sum().backward()
    assert close(x.grad.item(), 1 / (1 - math.exp(-1e-3)), 1e-8)


def test_log_odds_accurate_near_zero_in_float32():
    # 1 - exp(m) loses ~all float32 digits for m ~ -1e-6; expm1 does not
    for m in [-1e-6, -3e-6, -1e-5, -1e-4, -1e-3]:
        x = torch.tensor([m], dtype=torch.float32)
        assert math.isclose(L.log_odds(x).item(), ref_log_odds(x.item()), rel_tol=1e-5)


def test_kto_matches_reference():
    r = [RNG.uniform(-20, 20) for _ in range(10)] + [0.0, 3.0]
    d = [RNG.random() < 0.5 for _ in range(10)] + [True, False]
    for z0, b, ld, lu in [(0.0, 0.1, 1.0, 1.0), (2.5, 0.5, 1.0, 1.33), (0.7, 2.0, 0.5, 3.0)]:
        got = L.kto_loss(t(r), torch.tensor(d), t(z0), b, ld, lu)
        for g, ri, di in zip(got.tolist(), r, d):
            assert close(g, ref_kto(ri, di, z0, b, ld, lu)), (ri, di, z0)


def test_kto_reference_point():
    r = t([1.0, -3.0, 4.0, 2.0], grad=True)
    z0 = L.kto_reference_point(r)
    assert z0.dim() == 0 and close(z0.item(), 1.0) and not z0.requires_grad
    assert L.kto_reference_point(t([-1.0, -2.0])).item() == 0.0


def test_plackett_luce_matches_reference():
    rows = [[RNG.uniform(-10, 10) for _ in range(5)] for _ in range(4)]
    lengths = [5, 2, 3, 4]
    mask = torch.tensor([[k < n for k in range(5)] for n in lengths])
    for b in [0.1, 1.0, 2.5]:
        full = L.plackett_luce_loss(t(rows), b)
        masked = L.plackett_luce_loss(t(rows), b, mask)
        assert full.shape == (4,)
        for g, row in zip(full.tolist(), rows):
            assert close(g, ref_pl(row, b))
        for g, row, n in zip(masked.tolist(), rows, lengths):
            assert close(g, ref_pl(row[:n], b))


# --- properties ----------------------------------------------------------------------

@given(st.lists(st.tuples(EXTREME, EXTREME, EXTREME, EXTREME), min_size=1, max_size=6),
       st.booleans())
def test_margin_swap_negates(rows, with_ref):
    c, r, rc, rr = (t(list(col)) for col in zip(*rows))
    if with_ref:
        assert torch.equal(L.margin(r, c, rr, rc), -L.margin(c, r, rc, rr))
    else:
        assert torch.equal(L.margin(r, c), -L.margin(c, r))


@given(st.lists(EXTREME, min_size=1, max_size=8), BETAS)
def test_cdpo_and_robust_reduce_to_dpo_at_zero_smoothing(hs, beta):
    h = t(hs)
    dpo = L.dpo_loss(h, beta)
    torch.testing.assert_close(L.cdpo_loss(h, beta, 0.0), dpo, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L.robust_loss(h, beta, 0.0), dpo, rtol=1e-12, atol=1e-12)


@given(BETAS, st.floats(1e-3, 10.0), st.sampled_from([-1.0, 1.0]))
def test_ipo_minimum_at_half_inverse_beta(beta, delta, sign):
    star = 1 / (2 * beta)
    h = t([star], grad=True)
    loss = L.ipo_loss(h, beta)
    loss.sum().backward()
    assert loss.item() == 0.0
    assert h.grad.item() == 0.0
    assert L.ipo_loss(t([star + sign * delta]), beta).item() > 0.0


@given(st.lists(st.tuples(MODERATE, MODERATE), min_size=1, max_size=6), BETAS)
def test_plackett_luce_k2_is_dpo(pairs, beta):
    h = t([list(p) for p in pairs])
    want = L.dpo_loss(h[:, 0] - h[:, 1], beta)
    torch.testing.assert_close(L.plackett_luce_loss(h, beta), want, rtol=1e-9, atol=1e-9)


@given(st.integers(2, 6).flatmap(lambda k: st.lists(st.lists(MODERATE, min_size=k, max_size=k),
                                                    min_size=1, max_size=4)),
       st.floats(-100, 100), BETAS)
def test_plackett_luce_shift_invariant(rows, c, beta):
    h = t(rows)
    torch.testing.assert_close(L.plackett_luce_loss(h + c, beta), L.plackett_luce_loss(h, beta),
                               rtol=1e-9, atol=1e-8)


@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.lists(MODERATE, min_size=k, max_size=k), st.lists(EXTREME, min_size=0, max_size=3))),
    BETAS)
def test_plackett_luce_masked_row_equals_unmasked(row_pad, beta):
    row, pad = row_pad
    k = len(row)
    padded = t([row + pad], grad=True)
    mask = torch.tensor([[True] * k + [False] * len(pad)])
    got = L.plackett_luce_loss(padded, beta, mask)
    want = L.plackett_luce_loss(t([row]), beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    assert torch.all(padded.grad[0, k:] == 0)
    assert torch.isfinite(padded.grad).all()


def _assert_finite(out, *inputs):
    assert torch.isfinite(out).all(), out
    out.sum().backward()
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all(), x.grad


@given(st.lists(EXTREME, min_size=1, max_size=8), BETAS, EPS, DTYPES)
def test_pairwise_losses_finite_at_extremes(hs, beta, eps, dtype):
    for fn in [lambda h: L.dpo_loss(h, beta), lambda h: L.cdpo_loss(h, beta, eps),
               lambda h: L.robust_loss(h, beta, eps), lambda h: L.ipo_loss(h, beta),
               lambda h: L.hinge_loss(h, beta)]:
        h = t(hs, dtype, grad=True)
        out = fn(h)
        assert out.dtype == dtype
        _assert_finite(out, h)


@given(st.lists(st.tuples(EXTREME, EXTREME, EXTREME, EXTREME), min_size=1, max_size=6),
       BETAS, DTYPES)
def test_margin_then_dpo_finite_at_extremes(rows, beta, dtype):
    xs = [t(list(col), dtype, grad=True) for col in zip(*rows)]
    _assert_finite(L.dpo_loss(L.margin(*xs), beta), *xs)


@given(st.lists(st.tuples(EXTREME, EXTREME), min_size=1, max_size=6), BETAS,
       st.floats(0.0, 10.0), DTYPES)
def test_simpo_finite_at_extremes(pairs, beta, gamma, dtype):
    mw, ml = (t(list(col), dtype, grad=True) for col in zip(*pairs))
    _assert_finite(L.simpo_loss(mw, ml, beta, gamma), mw, ml)


@given(st.lists(st.tuples(LOGP, LOGP), min_size=1, max_size=6), st.floats(0.0, 10.0), DTYPES)
def test_orpo_finite_at_extremes(pairs, lam, dtype):
    mw, ml = (t(list(col), dtype, grad=True) for col in zip(*pairs))
    _assert_finite(L.orpo_loss(mw, ml, lam), mw, ml)


@given(st.lists(st.tuples(EXTREME, st.booleans()), min_size=1, max_size=8), st.floats(0, 1e4),
       BETAS, DTYPES)
def test_kto_finite_at_extremes(rows, z0, beta, dtype):
    r = t([x for x, _ in rows], dtype, grad=True)
    d = torch.tensor([b for _, b in rows])
    _assert_finite(L.kto_loss(r, d, t(z0, dtype), beta, 1.0, 1.5), r)
    assert torch.isfinite(L.kto_reference_point(r))


@given(st.integers(2, 5).flatmap(lambda k: st.lists(st.tuples(
    st.lists(EXTREME, min_size=k, max_size=k), st.integers(2, k)), min_size=1, max_size=4)),
    BETAS, DTYPES)
def test_plackett_luce_finite_at_extremes(rows, beta, dtype):
    h = t([r for r, _ in rows], dtype, grad=True)
    k = h.shape[1]
    mask = torch.tensor([[j < n for j in range(k)] for _, n in rows])
    _assert_finite(L.plackett_luce_loss(h, beta, mask), h)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_losses_finite_on_the_extreme_grid(dtype):
    grid = [-1e4, -1e3, -1.0, 0.0, 1.0, 1e3, 1e4]
    pairs = [(a, b) for a in grid for b in grid]
    hw, hl = (t(list(col), dtype, grad=True) for col in zip(*pairs))
    _assert_finite(L.dpo_loss(L.margin(hw, hl), 10.0) + L.robust_loss(hw - hl, 10.0, 0.3)
                   + L.simpo_loss(hw, hl, 10.0, 5.0) + L.plackett_luce_loss(
                       torch.stack([hw, hl], 1), 10.0), hw, hl)
    neg = [g for g in grid if g <= 0]
    mw, ml = (t(list(col), dtype, grad=True) for col in zip(*[(a, b) for a in neg for b in neg]))
    _assert_finite(L.orpo_loss(mw, ml, 0.1), mw, ml)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpo_at_zero_is_ln2(dtype):
    for beta in [0.1, 1.0, 5.0]:
        assert abs(L.dpo_loss(torch.zeros(3, dtype=dtype), beta) - math.log(2)).max() < 1e-7


@given(st.floats(-30, 30), st.floats(-30, 30), st.floats(0, 5), st.floats(0.1, 2.0))
def test_kto_monotone_in_r(r1, r2, z0, beta):
    lo, hi = min(r1, r2), max(r1, r2)
    r = t([lo, hi, lo, hi])
    d = torch.tensor([True, True, False, False])
    out = L.kto_loss(r, d, t(z0), beta, 1.0, 1.0).tolist()
    assert out[1] <= out[0]  # desirable: higher r, lower loss
    assert out[3] >= out[2]  # undesirable: higher r, higher loss
    if hi - lo > 1e-3 and max(abs(beta * (lo - z0)), abs(beta * (hi - z0))) < 10:
        assert out[1] < out[0] and out[3] > out[2]


# --- errors --------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.5, 0.7, 1.0, -0.1])
def test_robust_rejects_bad_smoothing(eps):
    with pytest.raises(ValueError):
        L.robust_loss(t([0.3]), 0.1, eps)


def test_robust_accepts_smoothing_just_below_half():
    assert torch.isfinite(L.robust_loss(t([0.3]), 0.1, 0.49)).all()


@pytest.mark.parametrize("mask", [
    [[True, True, True], [True, False, False]],   # a row with 1 valid entry
    [[True, True, True], [False, False, False]],  # a row with none
    [[True, False, True], [True, True, True]],    # not a prefix
])
def test_plackett_luce_rejects_bad_masks(mask):
    with pytest.raises(ValueError):
        L.plackett_luce_loss(torch.zeros(2, 3, dtype=F64), 1.0, torch.tensor(mask))


def test_plackett_luce_rejects_single_response_groups():
    with pytest.raises(ValueError):
        L.plackett_luce_loss(torch.zeros(3, 1, dtype=F64), 1.0)
    with pytest.raises(ValueError):
        L.plackett_luce_loss(torch.zeros(3, dtype=F64), 1.0)
