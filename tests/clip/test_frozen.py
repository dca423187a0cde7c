"""The frozen CLIP parts: ``clip-text`` (conditioner), ``clip-image`` (encoder) and the
``clip-score`` metric, built from a saved CLIP through the registry."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import gaf
from gaf.errors import BadConfig, BadData
from gaf.plugins.clip.score import CLIPSCORE_WEIGHT

SMALL = {"embed_dim": 16, "image_width": 8, "image_heads": 2, "text_width": 16,
         "text_layers": 1, "text_heads": 2, "resolution": 16}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A randomly initialised small CLIP (a temperature moved off its initial value so
    that a fresh model could not pass for it), saved as ``gaf.save`` writes it."""
    torch.manual_seed(0)
    model = gaf.create("encoder", "clip", **SMALL)
    with torch.no_grad():
        model.log_scale.fill_(1.5)
    path = tmp_path_factory.mktemp("clip") / "encoder"
    gaf.save(model, path)
    return model.eval(), path


def test_clip_text_gives_the_towers_states_and_the_empty_caption_as_null(saved):
    model, path = saved
    cond = gaf.create("conditioner", "clip-text", clip=str(path))
    captions = ["a red circle", "top left: a small blue square above a green star"]
    states, pooled = model.text(captions)
    assert torch.equal(cond(captions), states)
    assert (cond.tokens, cond.width, cond.embed_dim) == (24, 16, 16)
    assert torch.allclose(cond.pooled(captions), F.normalize(pooled, dim=-1))
    # pooled() skips the pads' states (TextTransformer.mean_state): equal to round-off
    torch.testing.assert_close(cond.pooled(captions, normalize=False), pooled.detach())
    empty = model.text([""])[0]
    assert torch.equal(cond.null(3), empty.expand(3, -1, -1))
    assert cond.null_pooled(2).shape == (2, 16)
    assert cond.trainable is False and cond.condition_key == "caption"


def test_frozen_towers_have_no_gradient_and_stay_in_eval_mode(saved, tmp_path):
    _, path = saved
    for kind, name in (("conditioner", "clip-text"), ("encoder", "clip-image")):
        part = gaf.create(kind, name, clip=str(path))
        part.train()
        assert not part.training and not any(m.training for m in part.modules())
        assert not any(p.requires_grad for p in part.parameters())


def test_the_path_is_made_absolute(saved, monkeypatch):
    _, path = saved
    monkeypatch.chdir(path.parent)
    cond = gaf.create("conditioner", "clip-text", clip="encoder")
    assert os.path.isabs(cond.config.clip) and cond.config.clip == str(path.resolve())


def test_clip_image_gives_unit_embeddings_and_checks_the_shape(saved):
    model, path = saved
    enc = gaf.create("encoder", "clip-image", clip=str(path))
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    want = F.normalize(model.encode_image(images), dim=-1)
    assert torch.allclose(enc(images), want, atol=1e-6)
    raw = gaf.create("encoder", "clip-image", clip=str(path), normalize=False)
    assert torch.allclose(raw(images), model.encode_image(images), atol=1e-6)
    with pytest.raises(BadData, match=r"expected images \(B, 3, 16, 16\), got \(3, 3, 32, 32\)"):
        enc(torch.zeros(3, 3, 32, 32))


def test_clip_score_metric_is_the_mean_clipscore_with_its_standard_error(saved):
    model, path = saved
    metric = gaf.create("metric", "clip-score", clip=str(path))
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    captions = ["a red circle", "a blue square", "a green star", "a cyan diamond",
                "a small red circle"]
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1).double()
        txt = F.normalize(model.encode_text(captions), dim=-1).double()
    per = CLIPSCORE_WEIGHT * (img * txt).sum(-1).clamp_min(0)
    got = metric(images, captions)
    assert got["clip_score"] == pytest.approx(float(per.mean()), abs=1e-6)
    assert got["clip_score_se"] == pytest.approx(float(per.std() / 5 ** 0.5), abs=1e-6)


def test_missing_or_wrong_clip_is_a_clear_error(saved, tmp_path):
    with pytest.raises(BadConfig, match="needs a trained CLIP: --set conditioner.clip=RUN_DIR"):
        gaf.create("conditioner", "clip-text")
    with pytest.raises(BadConfig, match="does not exist"):
        gaf.create("encoder", "clip-image", clip=str(tmp_path / "nowhere"))
    other = gaf.create("conditioner", "text-transformer", width=16, layers=1, heads=2)
    gaf.save(other, tmp_path / "text")
    with pytest.raises(Exception, match="holds a conditioner"):
        gaf.create("metric", "clip-score", clip=str(tmp_path / "text"))
