"""The style feature networks: fixed for a seed, frozen, the layers they name, and the
``--features NAME|PATH`` resolution with its errors."""

from __future__ import annotations

import pytest
import torch

import gaf
from gaf.errors import BadConfig, BadData, UnknownComponent
from gaf.plugins.metrics.features import FeatureNet, FeatureNetConfig
from gaf.plugins.style.extractors import (ClipCNNLayers, FeatureNetLayers, RandomMultiScaleCNN,
                                          resolve_features)

TINY_CLIP = dict(embed_dim=8, image_width=8, image_heads=2, text_width=16, text_layers=1,
                 text_heads=2, resolution=16)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A (random-init) feature net and a tiny CLIP, saved as a user would have them."""
    root = tmp_path_factory.mktemp("nets")
    torch.manual_seed(0)
    FeatureNet(FeatureNetConfig(width=4, feature_dim=8, resolution=16)).save(root / "fnet")
    gaf.save(gaf.create("encoder", "clip", **TINY_CLIP), root / "clip")
    gaf.save(gaf.create("encoder", "clip", image_tower="vit", patch_size=4, image_width=8,
                        image_layers=1, image_heads=2, embed_dim=8, text_width=16,
                        text_layers=1, text_heads=2, resolution=16), root / "vit")
    return root


def images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_random_cnn_is_fixed_by_its_seed():
    a, b = RandomMultiScaleCNN(), RandomMultiScaleCNN()
    other = gaf.create("style-features", "random-cnn", seed=1)
    x = images()
    for fa, fb, fo in zip(a(x), b(x), other(x), strict=True):
        assert torch.equal(fa, fb) and not torch.equal(fa, fo)


def test_random_cnn_layers_and_scales():
    net = gaf.create("style-features", "random-cnn", kernel_sizes=[3, 7], channels=4)
    assert net.layers == ("k3", "k7", "all") and net.style_layers == ("all",)
    maps = net(images(size=12))
    assert [tuple(m.shape) for m in maps] == [(2, 4, 12, 12), (2, 4, 12, 12), (2, 8, 12, 12)]
    assert torch.equal(maps[2], torch.cat(maps[:2], 1)) and (maps[0] >= 0).all()
    # a filter of size k sees a k x k window: one pixel moves outputs only within it
    x = images(1, 12)
    y = x.clone()
    y[0, :, 6, 6] += 1.0
    for i, k in enumerate((3, 7)):
        changed = (net(x)[i] != net(y)[i]).any(1)[0]
        window = torch.zeros(12, 12, dtype=torch.bool)
        window[6 - k // 2:7 + k // 2, 6 - k // 2:7 + k // 2] = True
        assert changed.any() and not (changed & ~window).any()
    with pytest.raises(BadConfig, match="odd"):
        gaf.create("style-features", "random-cnn", kernel_sizes=[4])
    with pytest.raises(ValueError, match="larger than"):
        gaf.create("style-features", "random-cnn", kernel_sizes=[15])(images(1, 6))


def test_extractors_are_frozen_but_pass_gradients(saved):
    nets = [RandomMultiScaleCNN(), gaf.create("style-features", "feature-net",
                                              path=str(saved / "fnet")),
            gaf.create("style-features", "clip-image", clip=str(saved / "clip"))]
    for net in nets:
        net.train()
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        x = images().requires_grad_(True)
        sum(m.sum() for m in net(x)).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert net.content_layer in net.layers and set(net.style_layers) <= set(net.layers)
        assert net.content_weight > 0 and net.style_weight > 0


def test_feature_net_layers_are_its_blocks(saved):
    fnet = FeatureNet.load(saved / "fnet")
    net = FeatureNetLayers(FeatureNetLayers.Config(path=str(saved / "fnet")))
    x = images()
    maps = net(x)
    assert net.layers == ("block1", "block2", "block3", "block4", "block5")
    with torch.no_grad():
        assert torch.allclose(maps[-1], fnet.body(x))
    assert [m.shape[1:] for m in maps] == [(4, 16, 16), (8, 8, 8), (8, 8, 8), (16, 4, 4),
                                           (16, 4, 4)]


def test_clip_layers_follow_the_tower(saved):
    from gaf.plugins.clip.frozen import load_clip

    clip = load_clip(saved / "clip")
    net = ClipCNNLayers(ClipCNNLayers.Config(clip=str(saved / "clip")))
    maps = net(images())
    with torch.no_grad():
        assert torch.allclose(maps[-1], clip.image.body(images()), atol=1e-6)
    assert [m.shape[1:] for m in maps] == [(8, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)]
    with pytest.raises(BadConfig, match="vit image tower"):
        gaf.create("style-features", "clip-image", clip=str(saved / "vit"))


def test_features_by_name_or_path(saved):
    assert isinstance(resolve_features("random-cnn"), RandomMultiScaleCNN)
    assert isinstance(resolve_features(str(saved / "fnet")), FeatureNetLayers)
    assert isinstance(resolve_features(str(saved / "clip")), ClipCNNLayers)
    with pytest.raises(UnknownComponent, match="did you mean 'random-cnn'"):
        resolve_features("random-cn")
    with pytest.raises(BadConfig, match="no such file"):
        resolve_features(str(saved / "missing"))
    with pytest.raises(BadConfig, match="needs a path"):
        resolve_features("feature-net")
    with pytest.raises(BadConfig, match="needs a path"):
        resolve_features("clip-image")
    (saved / "junk").mkdir(exist_ok=True)
    with pytest.raises((BadConfig, BadData)):
        resolve_features(str(saved / "junk"))


@pytest.mark.parametrize("name", gaf.names("style-features"))
def test_every_style_features_component_meets_the_contract(name, saved):
    options = {"feature-net": {"path": str(saved / "fnet")},
               "clip-image": {"clip": str(saved / "clip")}}.get(name, {})
    net = gaf.create("style-features", name, **options)
    maps = net(images())
    assert len(maps) == len(net.layers) and all(m.dim() == 4 and m.shape[0] == 2 for m in maps)
    assert net.content_layer in net.layers and set(net.style_layers) <= set(net.layers)
