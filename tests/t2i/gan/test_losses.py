"""gaf.plugins.t2i.gan.losses: every term against its hand formula in float64 (the paper's
probabilities, not the logit forms the code uses), the matching-aware gradient penalty
in closed form for a linear discriminator, and interpolation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaf.plugins.t2i.gan.losses import d_loss, g_loss, interpolate, matching_aware_gp

logits = st.lists(st.floats(-8, 8), min_size=1, max_size=6)


def t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def log_sigmoid(s):
    return torch.log(torch.sigmoid(s))


def log_one_minus_sigmoid(s):
    return torch.log(1 - torch.sigmoid(s))


@given(real=logits, fake=logits, wrong=logits)
def test_original_cls_loss_is_the_papers_formula(real, fake, wrong):
    r, f, w = t(real), t(fake), t(wrong)
    # L_D = -log D(x, h) - 1/2 [log(1 - D(x, h_wrong)) + log(1 - D(G(z, h), h))]
    want = (-log_sigmoid(r).mean()
            - 0.5 * (log_one_minus_sigmoid(w).mean() + log_one_minus_sigmoid(f).mean()))
    got, terms = d_loss(r, f, w)
    assert float(got) == pytest.approx(float(want), rel=1e-9, abs=1e-9)
    assert set(terms) == {"d_real", "d_fake", "d_wrong"}


@given(real=logits, fake=logits)
def test_original_loss_without_cls_is_the_gan_loss(real, fake):
    r, f = t(real), t(fake)
    want = -log_sigmoid(r).mean() - log_one_minus_sigmoid(f).mean()
    got, terms = d_loss(r, f)
    assert float(got) == pytest.approx(float(want), rel=1e-9, abs=1e-9)
    assert "d_wrong" not in terms


@given(real=logits, fake=logits, wrong=logits)
def test_hinge_losses(real, fake, wrong):
    r, f, w = t(real), t(fake), t(wrong)
    hinge = lambda x: torch.clamp(x, min=0)  # noqa: E731
    want = hinge(1 - r).mean() + 0.5 * (hinge(1 + w).mean() + hinge(1 + f).mean())
    assert float(d_loss(r, f, w, kind="hinge")[0]) == pytest.approx(float(want), abs=1e-12)
    want = hinge(1 - r).mean() + hinge(1 + f).mean()
    assert float(d_loss(r, f, kind="hinge")[0]) == pytest.approx(float(want), abs=1e-12)
    assert float(g_loss(f, "hinge")) == pytest.approx(float(-f.mean()), abs=1e-12)


@given(fake=logits)
def test_generator_loss_is_non_saturating(fake):
    f = t(fake)
    assert float(g_loss(f)) == pytest.approx(float(-log_sigmoid(f).mean()), rel=1e-9,
                                             abs=1e-9)


def test_only_valid_wrong_pairs_count():
    r, f = t([1.0, 2.0]), t([-1.0, 0.5])
    w = t([3.0, -2.0])
    got, terms = d_loss(r, f, w, torch.tensor([False, True]))
    want = (-log_sigmoid(r).mean()
            - 0.5 * (log_one_minus_sigmoid(w[1:]).mean() + log_one_minus_sigmoid(f).mean()))
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    # no valid pair: no wrong-text term
    got, terms = d_loss(r, f, w, torch.tensor([False, False]))
    assert "d_wrong" not in terms
    assert float(got) == pytest.approx(float(-log_sigmoid(r).mean()
                                             - 0.5 * log_one_minus_sigmoid(f).mean()))


def test_unknown_loss_is_an_error():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        g_loss(t([0.0]), "wasserstein")


@given(k=st.floats(0.5, 3), p=st.sampled_from([1.0, 2.0, 6.0]))
def test_ma_gp_closed_form_for_a_linear_discriminator(k, p):
    # D(x, e) = <a, x> + <b, e>: the gradient is (a, b) for every sample
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)

    def D(x, e):
        return (x * a).flatten(1).sum(1) + e @ b

    x, e = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    norm = math.sqrt(float(a.square().sum() + b.square().sum()))
    assert float(matching_aware_gp(D, x, e, k, p)) == pytest.approx(k * norm ** p, rel=1e-9)


def test_ma_gp_trains_the_discriminator():
    # create_graph: the penalty has a gradient with respect to D's weights
    w = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)

    def D(x, e):
        return (x.flatten(1) @ w) ** 2 + e.sum(1)

    x, e = torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
    gp = matching_aware_gp(D, x, e, 2.0, 2.0)
    (grad,) = torch.autograd.grad(gp, w)
    # ||grad_x D||^2 = (2 (x.w))^2 |w|^2 + 1 = 4 * 0.25 * 1.25 + 1 at x = (1, 1)
    assert float(gp.detach()) == pytest.approx(2.0 * (4 * 0.25 * 1.25 + 1.0), rel=1e-12)
    assert grad.abs().sum() > 0


@given(beta=st.floats(0, 1))
def test_interpolation(beta):
    h1, h2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(interpolate(h1, h2, beta), beta * h1 + (1 - beta) * h2)
    torch.testing.assert_close(interpolate(h1, h2, 1.0), h1)
    torch.testing.assert_close(interpolate(h1, h2, 0.0), h2)
