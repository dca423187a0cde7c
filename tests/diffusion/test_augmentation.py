"""Noise-conditioning augmentation (:mod:`gaf.plugins.diffusion.augmentation`) against
its formula in float64, and its invariants as Hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.plugins.diffusion.augmentation import (COSINE_OFFSET, augmentation_alpha_bar,
                                                noise_augment)


def reference_alpha_bar(a: float) -> float:
    """ᾱ(a) = cos²(π/2 (a+s)/(1+s)) / cos²(π/2 s/(1+s)), written out in float64."""
    s = COSINE_OFFSET
    return math.cos(math.pi / 2 * (a + s) / (1 + s)) ** 2 / math.cos(math.pi / 2 * s / (1 + s)) ** 2


def test_alpha_bar_against_the_formula_in_float64():
    levels = torch.linspace(0, 1, 101, dtype=torch.float64)
    got = augmentation_alpha_bar(levels)
    assert got.dtype == torch.float64
    want = torch.tensor([min(1.0, max(0.0, reference_alpha_bar(float(a)))) for a in levels],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    assert got[0] == 1.0 and got[-1] < 1e-12


def test_noise_augment_against_the_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    levels = torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64)
    got = noise_augment(x, levels, eps)
    for i, a in enumerate(levels.tolist()):
        ab = min(1.0, reference_alpha_bar(a))
        want = math.sqrt(ab) * x[i] + math.sqrt(1 - ab) * eps[i]
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-12)
    # one shared level is the same as that level repeated
    torch.testing.assert_close(noise_augment(x, 0.3, eps),
                               noise_augment(x, torch.full((4,), 0.3, dtype=torch.float64), eps))


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0, 1), b=st.floats(0, 1))
def test_alpha_bar_decreases_and_stays_in_unit_interval(a, b):
    lo, hi = sorted((a, b))
    ab = augmentation_alpha_bar(torch.tensor([lo, hi], dtype=torch.float64))
    assert 0.0 <= float(ab[1]) <= float(ab[0]) <= 1.0


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0, 1), scale=st.floats(0.1, 3.0))
def test_augmentation_keeps_the_signal_and_noise_weights_on_the_unit_circle(a, scale):
    """aug(x) is √ᾱ x + √(1−ᾱ) ε: linear in (x, ε) with weights whose squares sum to 1
    (so unit-variance data stays unit variance), read back from two probes."""
    x = torch.full((1, 1, 2, 2), scale, dtype=torch.float64)
    zero = torch.zeros_like(x)
    w_signal = float(noise_augment(x, a, zero).mean()) / scale
    w_noise = float(noise_augment(zero, a, x).mean()) / scale
    assert w_signal >= 0 and w_noise >= 0
    assert abs(w_signal ** 2 + w_noise ** 2 - 1.0) < 1e-9


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_level_outside_the_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augmentation_alpha_bar(torch.tensor([0.5, bad]))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shaped like"):
        noise_augment(torch.zeros(2, 3), 0.5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="levels for a batch"):
        noise_augment(torch.zeros(2, 3), torch.tensor([0.1, 0.2, 0.3]), torch.zeros(2, 3))
