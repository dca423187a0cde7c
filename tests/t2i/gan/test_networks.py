"""gaf.plugins.t2i.gan.networks: shapes at 32, 28 and 16 pixels for every discriminator
head and norm, spectral norm bounds each layer's largest singular value, the text
reaches both players, and bad options name the field."""

from __future__ import annotations

import pytest
import torch

import gaf
from gaf.errors import BadConfig
from gaf.plugins.t2i.gan.networks import (Discriminator, DiscriminatorConfig, Generator,
                                      GeneratorConfig, halvings)


@pytest.mark.parametrize("resolution,channels", [(32, 3), (28, 1), (16, 3)])
@pytest.mark.parametrize("norm", ["batch", "spectral"])
@pytest.mark.parametrize("head", ["concat", "projection"])
def test_shapes(resolution, channels, norm, head):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution, out_channels=channels, text_dim=8))
    D = Discriminator(DiscriminatorConfig(resolution=resolution, in_channels=channels,
                                          text_dim=8, norm=norm, head=head))
    x = G(torch.randn(5, G.z_dim), torch.randn(5, 8))
    assert x.shape == (5, channels, resolution, resolution)
    assert float(x.detach().abs().max()) <= 1.0
    assert D(x, torch.randn(5, 8)).shape == (5,)


def test_halvings():
    assert [halvings(r) for r in (4, 7, 8, 16, 28, 32, 64)] == [0, 0, 1, 2, 2, 3, 4]
    with pytest.raises(BadConfig, match="resolution"):
        GeneratorConfig(resolution=7)
    with pytest.raises(BadConfig, match="resolution"):
        DiscriminatorConfig(resolution=4)


@pytest.mark.parametrize("head", ["concat", "projection"])
def test_spectral_norm_bounds_the_largest_singular_value(head):
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(norm="spectral", head=head)).train()
    with torch.no_grad():  # every layer's weight scaled up: the norm must undo it
        for name, p in D.named_parameters():
            if name.endswith("original"):
                p.mul_(50.0)
        x, e = torch.randn(4, 3, 32, 32), torch.randn(4, 64)
        for _ in range(200):  # power iterations, one per training call
            D(x, e)
    D.eval()  # reading the weight in training mode would iterate once more
    layers = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == (6 if head == "concat" else 5)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        # the power iteration's estimate approaches the largest singular value from below
        assert float(sigma) == pytest.approx(1.0, abs=2e-3)
        raw = torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1),
                                       ord=2)
        assert float(raw) > 5.0  # the raw weight is far from norm 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())


def test_the_text_reaches_both_players():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(text_dim=8)).train()  # batch statistics: outputs O(1)
    z = torch.randn(3, G.z_dim)
    e1, e2 = torch.randn(3, 8), torch.randn(3, 8)
    assert (G(z, e1) - G(z, e2)).abs().amax() > 1e-3
    for head in ("concat", "projection"):
        D = Discriminator(DiscriminatorConfig(text_dim=8, head=head)).eval()
        x = torch.rand(3, 3, 32, 32) * 2 - 1
        assert (D(x, e1) - D(x, e2)).abs().amax() > 1e-4


def test_registered_and_saved(tmp_path):
    G = gaf.create("generator", "dcgan", text_dim=8, resolution=16)
    D = gaf.create("discriminator", "sn-projection", text_dim=8, resolution=16)
    assert D.config.norm == "spectral" and D.config.head == "projection"
    gaf.save(G, tmp_path / "g")
    gaf.save(D, tmp_path / "d")
    G2, D2 = gaf.load("generator", tmp_path / "g"), gaf.load("discriminator", tmp_path / "d")
    z, e = torch.randn(2, 100), torch.randn(2, 8)
    torch.testing.assert_close(G2(z, e), G.eval()(z, e))
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(D2(x, e), D.eval()(x, e))
