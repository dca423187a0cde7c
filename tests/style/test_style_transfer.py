"""The ``gatys`` stylizer: L-BFGS lowers the loss, the result is deterministic for a seed
and in range, and its fixed points are where the losses say."""

from __future__ import annotations

import pytest
import torch

import gaf
from gaf.errors import BadConfig, BadData
from gaf.plugins.style.extractors import RandomMultiScaleCNN, RandomCNNConfig
from gaf.plugins.style.textures import texture
from gaf.plugins.style.transfer import Gatys, GatysConfig

SMALL = RandomCNNConfig(kernel_sizes=(3, 5), channels=8)


def scene(size=16):
    """A black image with a coloured square, like a ``shapes`` scene."""
    x = -torch.ones(3, size, size)
    x[:, 4:10, 5:11] = torch.tensor([0.9, -0.7, -0.7])[:, None, None]
    return x


def stylizer(**options):
    return Gatys(GatysConfig(**options), features=RandomMultiScaleCNN(SMALL))


def test_lbfgs_lowers_the_total_loss():
    gatys = stylizer(steps=10)
    content, style = scene(), texture("stripes", 16, 0)
    result = gatys(content, style)
    start_total = gatys.content_weight * result.content_loss_start \
        + gatys.style_weight * result.style_loss_start
    assert result.total < 0.5 * start_total
    assert result.style_loss < result.style_loss_start and 0 < result.style_fraction < 1
    assert 1 <= result.iterations <= 10 and result.evaluations >= result.iterations
    assert result.image.shape == content.shape
    assert float(result.image.min()) >= -1 and float(result.image.max()) <= 1
    # the reported losses are the written image's
    again = gatys.losses(result.image, content, style)
    assert again["style_loss"] == pytest.approx(result.style_loss, rel=1e-5)
    assert again["content_loss"] == pytest.approx(result.content_loss, rel=1e-5, abs=1e-6)


def test_deterministic_for_a_seed():
    gatys = stylizer(steps=5, init="noise")
    content, style = scene(), texture("dots", 16, 1)
    a, b = gatys(content, style, seed=3), gatys(content, style, seed=3)
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.image, gatys(content, style, seed=4).image)
    start = stylizer(steps=5)  # a content start draws nothing: the seed does not matter
    assert torch.equal(start(content, style, seed=0).image, start(content, style, seed=9).image)


def test_fixed_points():
    content = scene()
    # no style term: the content image is the optimum it starts from
    only_content = stylizer(steps=5, style_weight=0.0)
    assert torch.equal(only_content(content, texture("waves", 16)).image, content)
    # the style is the content itself: nothing to change
    same = stylizer(steps=5)(content, content)
    assert same.style_loss_start == 0 and same.content_loss == 0
    assert torch.equal(same.image, content)


def test_texture_synthesis_from_noise_approaches_the_style():
    gatys = stylizer(steps=30, content_weight=0.0, style_weight=1.0, init="noise")
    result = gatys(scene(), texture("checks", 16, 2))
    assert result.style_fraction < 0.2


def test_options_are_checked_before_any_work():
    with pytest.raises(BadConfig, match="no layer 'k9'"):
        stylizer(content_layer="k9")
    with pytest.raises(BadConfig, match="no layer"):
        stylizer(style_layers=("all", "deep"))
    with pytest.raises(BadConfig, match="style_weight must be > 0"):
        stylizer(content_weight=0.0, style_weight=0.0)
    with pytest.raises(BadConfig, match="steps must be >= 1"):
        gaf.create("stylizer", "gatys", steps=0)
    with pytest.raises(BadConfig, match="content_weight must be >= 0"):
        gaf.create("stylizer", "gatys", content_weight=-1.0)
    gatys = stylizer(steps=1)
    with pytest.raises(BadData, match="resize the style"):
        gatys(scene(16), texture("dots", 12))
    with pytest.raises(BadData, match=r"\(3, H, W\)"):
        gatys(scene()[None], scene()[None])
    bad = scene()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(BadData, match="non-finite"):
        gatys(bad, scene())


def test_the_registered_stylizer_resolves_its_features():
    gatys = gaf.create("stylizer", "gatys", steps=2)
    assert isinstance(gatys.features, RandomMultiScaleCNN)
    assert gatys.content_weight == gatys.features.content_weight
    assert gaf.create("stylizer", "gatys", style_weight=7.0).style_weight == 7.0
