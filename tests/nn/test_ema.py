"""EMA of weights: the update against its closed form, the warm-up rule, frozen shadows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gaf.plugins.nn.ema import ema_decay, make_shadow, update_shadow


@given(st.floats(0.0, 0.9999), st.integers(1, 100_000))
def test_decay_is_the_ldm_warmup_capped_at_decay(decay, step):
    got = ema_decay(decay, step)
    assert got == min(decay, (1 + step) / (10 + step))
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)


@given(st.lists(st.floats(0.0, 0.999), min_size=1, max_size=6), st.integers(0, 2 ** 31))
def test_updates_match_the_float64_recursion(decays, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    shadow = make_shadow(model)
    ref = {k: v.double().clone() for k, v in shadow.state_dict().items()}
    for d in decays:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        update_shadow(shadow, model, d)
        for name, p in model.named_parameters():
            ref[name] = d * ref[name] + (1 - d) * p.detach().double()
        ref["1.running_mean"] = model[1].running_mean.double().clone()
    for name, value in shadow.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value.double(), ref[name], atol=1e-5), name


def test_shadow_is_a_frozen_copy_and_decay_bounds_are_checked():
    model = nn.Linear(2, 2)
    shadow = make_shadow(model)
    assert all(not p.requires_grad for p in shadow.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not shadow.training
    update_shadow(shadow, model, 0.0)  # decay 0 copies
    assert torch.equal(shadow.weight, model.weight)
    with torch.no_grad():
        model.weight.add_(1.0)
    update_shadow(shadow, model, 1.0)  # decay 1 keeps
    assert not torch.equal(shadow.weight, model.weight)
    with pytest.raises(ValueError, match="decay must be in"):
        update_shadow(shadow, model, 1.5)
