"""Samplers: support (top-k, top-p), determinism, seeding, -inf handling, config checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.config import from_dict
from gaf.errors import BadConfig
from gaf.interfaces import Sampler
from gaf.plugins.lm.samplers import Greedy, Temperature, TopK, TopP

NEG_INF = float("-inf")
_finite = st.floats(min_value=-30, max_value=30, allow_nan=False)
_logit_rows = st.integers(2, 12).flatmap(
    lambda v: st.lists(st.lists(st.one_of(_finite, st.just(NEG_INF)), min_size=v, max_size=v)
                       .filter(lambda row: any(x != NEG_INF for x in row)),
                       min_size=1, max_size=4))


def _all_samplers():
    return [Greedy(Greedy.Config()), Temperature(Temperature.Config(temperature=0.7)),
            TopK(TopK.Config(k=3)), TopP(TopP.Config(p=0.8))]


def test_samplers_fit_protocol():
    for s in _all_samplers():
        assert isinstance(s, Sampler)


def test_greedy_is_argmax_and_deterministic():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0))
    out = Greedy(Greedy.Config())(logits)
    assert out.dtype == torch.int64 and out.shape == (16,)
    assert torch.equal(out, logits.argmax(-1))
    assert torch.equal(out, Greedy(Greedy.Config())(logits.clone()))


@settings(max_examples=80, deadline=None)
@given(_logit_rows, st.integers(1, 15), st.integers(0, 2**31 - 1))
def test_top_k_stays_in_top_k(rows, k, seed):
    logits = torch.tensor(rows, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    out = TopK(TopK.Config(k=k, temperature=1.3))(logits, generator=g)
    for b, tok in enumerate(out.tolist()):
        assert logits[b, tok] != NEG_INF
        # at most k-1 tokens may be strictly larger than the chosen one
        assert int((logits[b] > logits[b, tok]).sum()) < k


@settings(max_examples=80, deadline=None)
@given(_logit_rows, st.floats(0.01, 1.0), st.floats(0.2, 3.0), st.integers(0, 2**31 - 1))
def test_top_p_stays_in_nucleus(rows, p, temperature, seed):
    logits = torch.tensor(rows, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    out = TopP(TopP.Config(p=p, temperature=temperature))(logits, generator=g)
    probs = torch.softmax(logits.double() / temperature, -1)
    for b, tok in enumerate(out.tolist()):
        assert logits[b, tok] != NEG_INF
        # mass of tokens strictly more likely than the chosen one must be below p
        # (otherwise a smaller set already reached p); small float32 slack
        before = float(probs[b][probs[b] > probs[b, tok]].sum())
        assert before < p + 1e-5


def test_top_p_small_p_is_greedy_and_large_p_is_not():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(TopP(TopP.Config(p=0.05))(logits, g), torch.full((400,), 2))
    wide = TopP(TopP.Config(p=1.0))(logits, g)
    assert set(wide.tolist()) == {0, 1, 2, 3}
    # p = 0.8: probs are 0.03, 0.09, 0.64, 0.24 -> nucleus {2, 3}
    mid = TopP(TopP.Config(p=0.8))(logits, g)
    assert set(mid.tolist()) == {2, 3}


def test_top_k_samples_all_of_top_k():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0, 2.5]]).repeat(500, 1)
    out = TopK(TopK.Config(k=3))(logits, torch.Generator().manual_seed(0))
    assert set(out.tolist()) == {2, 3, 4}


@pytest.mark.parametrize("make", [lambda: Temperature(Temperature.Config()),
                                  lambda: TopK(TopK.Config(k=5)),
                                  lambda: TopP(TopP.Config(p=0.95))])
def test_seeded_generator_repeats_and_different_seed_differs(make):
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(3))
    s = make()
    a = s(logits, torch.Generator().manual_seed(7))
    b = s(logits, torch.Generator().manual_seed(7))
    c = s(logits, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@settings(max_examples=50, deadline=None)
@given(_logit_rows, st.integers(0, 2**31 - 1))
def test_no_sampler_picks_minus_inf(rows, seed):
    logits = torch.tensor(rows, dtype=torch.float32)
    for s in _all_samplers():
        out = s(logits, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.int64 and out.shape == (logits.shape[0],)
        chosen = logits.gather(-1, out.unsqueeze(-1)).squeeze(-1)
        assert not torch.isinf(chosen).any()


def test_minus_inf_excluded_even_when_others_are_tiny():
    # one finite token with a very low logit: it must always win over -inf tokens
    logits = torch.full((200, 10), NEG_INF)
    logits[:, 6] = -1e4
    for s in _all_samplers():
        assert torch.equal(s(logits, torch.Generator().manual_seed(0)), torch.full((200,), 6))


def test_all_minus_inf_row_is_an_error():
    logits = torch.full((1, 5), NEG_INF)
    for s in _all_samplers():
        with pytest.raises(ValueError):
            s(logits)


def test_temperature_changes_spread():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    cold = Temperature(Temperature.Config(temperature=0.1))(logits, g)
    hot = Temperature(Temperature.Config(temperature=10.0))(logits, g)
    assert (cold == 2).float().mean() > 0.99
    frac0 = (hot == 0).float().mean().item()
    expected0 = math.exp(0) / sum(math.exp(x / 10) for x in (0, 1, 2))
    assert abs(frac0 - expected0) < 0.04


@pytest.mark.parametrize("cls, data", [
    (Temperature, {"temperature": 0.0}), (Temperature, {"temperature": -1.0}),
    (TopK, {"k": 0}), (TopK, {"temperature": 0}),
    (TopP, {"p": 0.0}), (TopP, {"p": 1.5}), (TopP, {"temperature": -2}),
])
def test_bad_config_rejected(cls, data):
    with pytest.raises(BadConfig):
        from_dict(cls.Config, data)


def test_config_validation_also_on_direct_construction():
    with pytest.raises(BadConfig, match="^k must be >= 1, got 0$"):
        TopK.Config(k=0)
    cfg = TopK.Config()
    with pytest.raises(BadConfig, match="^k must be >= 1, got 0$"):
        cfg.k = 0  # attrs.define classes are mutable; the declared check runs on assignment
