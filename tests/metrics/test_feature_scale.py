"""The layout feature net's feature scale: its metric features have RMS 1 on the
images it was trained on, the scale travels with the weights, and a pooled net keeps
the version-1 state dict (no scale)."""

from __future__ import annotations

import pytest
import torch

from gaf.plugins.images.shapes import ShapesConfig, ShapesDataset
from gaf.plugins.metrics.features import (FeatureNet, FeatureNetConfig, load_images,
                                          train_feature_net)

KW = dict(epochs=1, batch_size=32, width=4, feature_dim=8, compute_floor=False,
          num_threads=1)


@pytest.fixture(scope="module")
def splits():
    train = ShapesDataset(ShapesConfig(resolution=16, split="train", size=96, seed=0))
    held = ShapesDataset(ShapesConfig(resolution=16, split="eval", size=32, seed=0))
    return train, held


def test_layout_features_have_unit_rms_on_the_training_images(splits, tmp_path):
    train, held = splits
    net = train_feature_net(train, held, seed=1, **KW)
    x, _ = load_images(train)
    with torch.no_grad():
        raw = torch.cat([net.embed(x[i:i + 50]) for i in range(0, len(x), 50)]).double()
    scale = float(net.feature_scale)
    # the formula: the RMS over every training image and feature of the raw activations
    assert scale == pytest.approx(float(raw.pow(2).mean().sqrt()), rel=1e-6)
    assert scale != 1.0
    feats = net.features(x)
    assert float(feats.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(feats, raw / scale, rtol=1e-6, atol=1e-9)
    # saved with the weights: a loaded net gives the same features
    loaded = FeatureNet.load(net.save(tmp_path / "net"))
    assert float(loaded.feature_scale) == scale
    assert torch.equal(loaded.features(x), feats)


def test_a_pooled_net_has_the_version_1_state_and_unscaled_features(splits):
    train, held = splits
    net = train_feature_net(train, held, seed=1, variant="pooled", **KW)
    assert "feature_scale" not in net.state_dict() and not net.config.layout_head
    old = FeatureNet(FeatureNetConfig(num_classes=30, width=4, feature_dim=8, resolution=16,
                                      variant="pooled"))
    assert set(old.state_dict()) == set(net.state_dict())
    x, _ = load_images(held)
    with torch.no_grad():
        assert torch.equal(net.features(x), net.embed(x).double())
