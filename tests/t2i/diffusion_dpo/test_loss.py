"""The Diffusion-DPO loss against float64 references written here: the margin and every
named loss, the v-to-ε weighting through the objective's ``loss``, ``h = 0`` and ``ln 2``
when the policy is the reference, shared ``t`` and ``ε``, and the swap property."""

from __future__ import annotations

import copy
import math

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gaf
from gaf.plugins.t2i.diffusion_dpo import loss as L
from gaf.plugins.t2i.diffusion_dpo.data import ordered_pairs
from gaf.plugins.t2i.diffusion_dpo.objective import DiffusionDPO, DiffusionDPOConfig


def reference_losses(e, r, beta, eps):
    """float64: h and each loss from (2B,) policy and reference errors."""
    e, r = e.double(), r.double()
    n = len(e) // 2
    h = (r[:n] - e[:n]) - (r[n:] - e[n:])
    z = beta * h
    nls = lambda x: torch.log1p(torch.exp(-x))  # -log sigmoid(x), fine for these ranges
    return h, {"dpo": nls(z), "cdpo": (1 - eps) * nls(z) + eps * nls(-z),
               "robust": ((1 - eps) * nls(z) - eps * nls(-z)) / (1 - 2 * eps),
               "ipo": (h - 1 / (2 * beta)) ** 2,
               "hinge": torch.clamp(1 - z, min=0)}


@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "ipo", "hinge"])
def test_named_losses_match_float64(name):
    g = torch.Generator().manual_seed(1)
    e = torch.rand(12, generator=g)
    r = e + 0.01 * torch.randn(12, generator=g)
    beta, eps = 50.0, 0.2
    h64, ref = reference_losses(e, r, beta, eps)
    h = L.pair_margin(e, r)
    torch.testing.assert_close(h.double(), h64, rtol=1e-5, atol=1e-6)
    got = L.pair_loss(name, h, beta, eps)
    torch.testing.assert_close(got.double(), ref[name], rtol=1e-4, atol=1e-6)


def test_unknown_loss_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown pair loss 'sigmoid'"):
        L.pair_loss("sigmoid", torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="two"):
        L.pair_margin(torch.zeros(3), torch.zeros(3))


def test_error_weights_and_reductions():
    ab = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert L.epsilon_error_weight("epsilon", ab).tolist() == [1.0, 1.0]
    assert L.epsilon_error_weight("v_prediction", ab).tolist() == [0.25, 0.5]
    assert L.epsilon_error_weight("sample", ab).tolist() == [pytest.approx(1 / 3), 1.0]
    out, target = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    w = torch.tensor([1.0, 2.0])
    assert L.denoising_errors(out, target, w, "mean").tolist() == [1.0, 2.0]
    assert L.denoising_errors(out, target, w, "sum").tolist() == [12.0, 24.0]


# --------------------------------------------------------------- through the objective


class Recorder(nn.Module):
    """A small conv noise model that records the inputs it saw."""

    prediction_type = "v_prediction"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.calls = []

    def forward(self, x, t, context):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        return self.conv(x) * (1 + t[:, None, None, None] / 1000) + context.mean((1, 2))[:, None, None, None]


class Conditioner(nn.Module):
    condition_key = "caption"

    def forward(self, captions):
        return torch.stack([torch.full((2, 4), float(len(c))) for c in captions])

    def null(self, n):
        return torch.zeros(n, 2, 4)


def bare_objective(prediction="v_prediction", **options):
    """A DiffusionDPO with the attributes ``loss`` reads, set by hand (no base run)."""
    obj = DiffusionDPO(DiffusionDPOConfig(**options))
    obj.scheduler = gaf.create("scheduler", "ddpm", prediction_type=prediction)
    torch.manual_seed(0)
    obj.noise_model = Recorder()
    obj.noise_model.prediction_type = prediction
    obj.reference = copy.deepcopy(obj.noise_model)
    with torch.no_grad():
        for p in obj.reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj.conditioner = Conditioner()
    return obj


def a_batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"z_chosen": torch.randn(n, 3, 4, 4, generator=g),
            "z_rejected": torch.randn(n, 3, 4, 4, generator=g),
            "conditions": ["a", "bb", "ccc"][:n],
            "t": torch.tensor([10, 500, 990][:n]), "noise": torch.randn(n, 3, 4, 4, generator=g),
            "drop": torch.zeros(n, dtype=torch.bool),
            "reward_margin": torch.tensor([0.5, float("nan"), 0.1][:n], dtype=torch.float64)}


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon", "sample"])
def test_objective_loss_matches_float64_epsilon_errors(prediction):
    """ε̂ is computed here in float64 from the model's output (v̂ → √ᾱ v̂ + √(1−ᾱ) x_t,
    x̂0 → (x_t − √ᾱ x̂0)/√(1−ᾱ)) and the errors, h and the dpo loss from it."""
    obj = bare_objective(prediction, beta=500.0)
    batch = a_batch()
    loss, metrics = obj.loss(batch)
    n = len(batch["t"])
    z0 = torch.cat([batch["z_chosen"], batch["z_rejected"]]).double()
    eps = batch["noise"].repeat(2, 1, 1, 1).double()
    t = batch["t"].repeat(2)
    ab = obj.scheduler.alphas_cumprod[t].double()[:, None, None, None]
    x_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    context = torch.cat([obj.conditioner(batch["conditions"])] * 2)

    def errors(model):
        out = model.double()(x_t, t, context.double()).detach()
        model.float()
        if prediction == "v_prediction":
            eps_hat = ab.sqrt() * out + (1 - ab).sqrt() * x_t
        elif prediction == "sample":
            eps_hat = (x_t - ab.sqrt() * out) / (1 - ab).sqrt()
        else:
            eps_hat = out
        return ((eps - eps_hat) ** 2).flatten(1).mean(1)

    e, r = errors(obj.noise_model), errors(obj.reference)
    h = (r[:n] - e[:n]) - (r[n:] - e[n:])
    expected = torch.log1p(torch.exp(-500.0 * h)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=2e-3, abs=1e-6)
    assert metrics["margin"] == pytest.approx(float(h.mean()), rel=2e-3, abs=1e-8)
    assert metrics["implicit_accuracy"] == pytest.approx(float((h > 0).double().mean()))
    assert metrics["reward_margin"] == pytest.approx(0.3)


def test_policy_equal_to_reference_gives_h_zero_and_ln2():
    obj = bare_objective()
    obj.reference = copy.deepcopy(obj.noise_model)
    loss, metrics = obj.loss(a_batch())
    assert metrics["margin"] == 0.0 and metrics["implicit_accuracy"] == 0.0
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-7)


def test_winner_and_loser_share_t_and_noise():
    obj = bare_objective(prediction="epsilon")
    batch = a_batch()
    obj.loss(batch)
    (x_t, t), = obj.noise_model.calls  # one call of the policy on all 2B latents
    n = len(batch["t"])
    assert torch.equal(t[:n], t[n:]) and torch.equal(t[:n], batch["t"])
    ab = obj.scheduler.alphas_cumprod[t].float()[:, None, None, None]
    z0 = torch.cat([batch["z_chosen"], batch["z_rejected"]])
    noise = (x_t - ab.sqrt() * z0) / (1 - ab).sqrt()
    torch.testing.assert_close(noise[:n], noise[n:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(noise[:n], batch["noise"], rtol=1e-4, atol=1e-4)
    (ref_x, ref_t), = obj.reference.calls
    assert torch.equal(ref_x, x_t) and torch.equal(ref_t, t)


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite, finite), min_size=1, max_size=8))
def test_swapping_winner_and_loser_negates_h(rows):
    e_w, e_l, r_w, r_l = (torch.tensor(c, dtype=torch.float32) for c in zip(*rows))
    h = L.pair_margin(torch.cat([e_w, e_l]), torch.cat([r_w, r_l]))
    swapped = L.pair_margin(torch.cat([e_l, e_w]), torch.cat([r_l, r_w]))
    assert torch.equal(swapped, -h)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=6))
def test_ordered_pairs_keep_every_strict_preference_once(rewards):
    pairs = ordered_pairs(rewards)
    assert all(rewards[w] > rewards[lo] for w, lo in pairs)
    unequal = sum(rewards[i] != rewards[j] for i in range(len(rewards))
                  for j in range(i + 1, len(rewards)))
    assert len(pairs) == len(set(pairs)) == unequal


def test_config_validates():
    with pytest.raises(gaf.errors.BadConfig, match="beta"):
        gaf.config.from_dict(DiffusionDPOConfig, {"beta": 0})
    with pytest.raises(gaf.errors.BadConfig, match="loss"):
        gaf.config.from_dict(DiffusionDPOConfig, {"loss": "simpo"})
    assert attrs.has(DiffusionDPOConfig)


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_sft_baseline_is_the_base_loss_on_the_winners_only(prediction):
    """loss = "sft": the mean squared error in the model's own parameterisation (what
    ``ldm`` trains) on the chosen images, computed here in float64; the losers change
    nothing but the logged margin."""
    obj = bare_objective(prediction, loss="sft")
    batch = a_batch()
    loss, metrics = obj.loss(batch)
    params = list(obj.noise_model.parameters())
    grads = torch.autograd.grad(loss, params)
    other = dict(batch, z_rejected=batch["z_rejected"] + 3.0)
    loss2, metrics2 = obj.loss(other)
    grads2 = torch.autograd.grad(loss2, params)
    assert float(loss2.detach()) == float(loss.detach())
    assert metrics2["margin"] != metrics["margin"] and "implicit_accuracy" in metrics
    assert any(g.abs().sum() > 0 for g in grads)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    z0, eps, t = batch["z_chosen"].double(), batch["noise"].double(), batch["t"]
    ab = obj.scheduler.alphas_cumprod[t].double()[:, None, None, None]
    x_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    target = ab.sqrt() * eps - (1 - ab).sqrt() * z0 if prediction == "v_prediction" else eps
    with torch.no_grad():
        out = obj.noise_model.double()(x_t, t, obj.conditioner(batch["conditions"]).double())
    expected = ((out - target) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
