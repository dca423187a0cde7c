"""gaf.plugins.clip.towers: shapes and parameter counts of both image towers at 32 and 28
pixels, the text tower's pooling over real tokens only, and the options' checks."""

from __future__ import annotations

import pytest
import torch

from gaf.errors import BadConfig
from gaf.plugins.clip.loss import INIT_LOG_SCALE
from gaf.plugins.clip.towers import CLIPConfig, CLIPModel


@pytest.mark.parametrize("tower", ["cnn", "vit"])
@pytest.mark.parametrize("resolution,channels", [(32, 3), (28, 1)])
def test_both_towers_embed_images_and_captions(tower, resolution, channels):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(image_tower=tower, resolution=resolution,
                                 in_channels=channels, embed_dim=16))
    images = torch.rand(3, channels, resolution, resolution) * 2 - 1
    assert model.encode_image(images).shape == (3, 16)
    states, feats = model.text(["a red circle", "a large blue square in the top left", "x"])
    assert states.shape == (3, 24, 64) and feats.shape == (3, 16)
    img, txt, s = model(images, *model.tokenize(["a", "b", "c"]))
    assert img.shape == txt.shape == (3, 16) and s.item() == pytest.approx(INIT_LOG_SCALE)
    sim = model.similarity(images, ["a red circle", "a blue square"])
    assert sim.shape == (3, 2) and bool((sim.abs() <= 1 + 1e-6).all())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 50_000 < trainable < 1_000_000  # a tiny model, trained in minutes on 2 cores


def test_text_features_ignore_the_pad_states():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(embed_dim=8))
    ids, mask = model.tokenize(["a red circle"])
    states, feats = model.text_ids(ids, mask)
    real = mask[0]
    want = model.text_proj(states[0, real].mean(dim=0))
    assert torch.allclose(feats[0], want, atol=1e-6)
    assert int(real.sum()) == 3  # " a", " red", " circle": one shapes-bpe token each


def test_options_are_checked():
    with pytest.raises(BadConfig, match="patch_size"):
        CLIPConfig(image_tower="vit", resolution=28, patch_size=5)
    with pytest.raises(BadConfig, match="image_heads"):
        CLIPConfig(image_width=6, image_heads=5)
