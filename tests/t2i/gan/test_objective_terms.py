"""The gan-int-cls loss on one batch, without a run: the wrong-text term reaches the
discriminator (and only with CLS), each player gets the gradient of its own loss only,
and the interpolated embeddings train the generator (and only with INT)."""

from __future__ import annotations

import pytest
import torch

from gaf.plugins.t2i.gan.losses import d_loss, g_loss, interpolate
from gaf.plugins.t2i.gan.networks import (Discriminator, DiscriminatorConfig, Generator,
                                      GeneratorConfig)
from gaf.plugins.t2i.gan.objective import GANIntCls, GANIntClsConfig

TEXT = 8


def objective(**options):
    torch.manual_seed(0)
    obj = GANIntCls(GANIntClsConfig(**options))
    obj.generator = Generator(GeneratorConfig(text_dim=TEXT, resolution=16, width=8))
    obj.discriminator = Discriminator(DiscriminatorConfig(text_dim=TEXT, resolution=16,
                                                          width=8, norm="spectral"))
    obj.joint = False
    return obj


def batch(seed=1, b=6):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(b, 3, 16, 16, generator=g) * 2 - 1,
            "z": torch.randn(b, 100, generator=g), "z2": torch.randn(b, 100, generator=g),
            "e": torch.randn(b, TEXT, generator=g), "e_wrong": torch.randn(b, TEXT, generator=g),
            "e_partner": torch.randn(b, TEXT, generator=g),
            "valid": torch.ones(b, dtype=torch.bool)}


def grads(obj, b, module):
    params = [p for p in module.parameters() if p.requires_grad]
    for m in (obj.generator, obj.discriminator):
        m.zero_grad()
    loss, metrics = obj.loss(b)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params], metrics


@pytest.mark.parametrize("cls", [True, False])
def test_the_wrong_text_term_reaches_the_discriminator(cls):
    obj = objective(cls=cls)
    b1 = batch()
    b2 = {**b1, "e_wrong": b1["e_wrong"] * -3.0}
    g1, m1 = grads(obj, b1, obj.discriminator)
    obj = objective(cls=cls)  # the same weights and power-iteration state
    g2, _ = grads(obj, b2, obj.discriminator)
    differ = any((a - c).abs().max() > 1e-7 for a, c in zip(g1, g2))
    assert differ == cls
    assert ("d_wrong" in m1) == cls


def test_each_player_gets_the_gradient_of_its_own_loss_only():
    obj = objective(cls=True, interpolate=True)
    b = batch()
    d_grads, metrics = grads(obj, b, obj.discriminator)
    # the discriminator's gradient is that of L_D alone, recomputed by hand
    obj2 = objective(cls=True, interpolate=True)
    G, D = obj2.generator, obj2.discriminator
    fake = G(b["z"], b["e"]).detach()
    loss_d, _ = d_loss(D(b["images"], b["e"]), D(fake, b["e"]), D(b["images"], b["e_wrong"]),
                       b["valid"])
    want = torch.autograd.grad(loss_d, [p for p in D.parameters() if p.requires_grad])
    for got, w in zip(d_grads, want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-6)
    assert metrics["d_loss"] == pytest.approx(float(loss_d), rel=1e-5)


def test_the_generator_gets_the_gradient_of_its_own_loss_only():
    obj = objective(cls=True, interpolate=True)
    b = batch()
    g_grads, _ = grads(obj, b, obj.generator)
    obj2 = objective(cls=True, interpolate=True)
    G, D = obj2.generator, obj2.discriminator
    for p in D.parameters():
        p.requires_grad_(False)
    # the same discriminator calls in the same order (BatchNorm-free D; spectral norm's
    # power iteration runs once per call in both)
    fake = G(b["z"], b["e"])
    D(b["images"], b["e"]), D(fake.detach(), b["e"]), D(b["images"], b["e_wrong"])
    e_int = interpolate(b["e"], b["e_partner"], 0.5)
    loss_g = g_loss(D(fake, b["e"])) + g_loss(D(G(b["z2"], e_int), e_int))
    want = torch.autograd.grad(loss_g, list(G.parameters()))
    for got, w in zip(g_grads, want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("interpolate_on", [True, False])
def test_interpolated_embeddings_train_the_generator(interpolate_on):
    obj = objective(interpolate=interpolate_on)
    b = batch()
    b["z2"] = b["z2"].clone().requires_grad_(True)
    loss, metrics = obj.loss(b)
    loss.backward()
    reached = b["z2"].grad is not None and bool(b["z2"].grad.abs().sum() > 0)
    assert reached == interpolate_on
    assert ("g_int" in metrics) == interpolate_on
    # (that the interpolated term leaves the discriminator alone is the test above: its
    # gradient is L_D's, which has no interpolated input)
