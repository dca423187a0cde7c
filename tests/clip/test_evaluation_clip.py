"""The evaluation CLIP: deterministic for its own seed, cached, refused when a pipeline
generates with it; the AUC and CLIP metrics of the shared evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig
from gaf.plugins.clip import evaluation_clip as ec
from gaf.plugins.clip.towers import CLIPConfig
from gaf.plugins.images.shapes import COLOURS, SHAPES
from gaf.plugins.t2i.evaluation import auc

SMALL = dict(embed_dim=16, image_width=16, image_layers=1, image_heads=2, patch_size=4,
             text_width=16, text_layers=1, text_heads=2, resolution=16)


@pytest.fixture(scope="module")
def shapes16():
    return gaf.create("dataset", "shapes", resolution=16, size=64)


@pytest.fixture(autouse=True)
def small_evaluation_clip(monkeypatch):
    monkeypatch.setattr(ec, "EVALUATION_CLIP", {**ec.EVALUATION_CLIP, **{
        k: v for k, v in SMALL.items() if k != "resolution"}})


def _pairs(ds, n=32):
    from gaf.plugins.images.batches import stack_images

    return stack_images(ds, range(n)), [ds[i]["caption"] for i in range(n)]


def test_training_is_deterministic_for_a_seed_and_differs_across_seeds(shapes16):
    images, captions = _pairs(shapes16)
    cfg = CLIPConfig(image_tower="vit", **SMALL)
    a = ec.train_clip(images, captions, cfg, seed=3, steps=3, batch_size=8, log=lambda s: None)
    b = ec.train_clip(images, captions, cfg, seed=3, steps=3, batch_size=8, log=lambda s: None)
    c = ec.train_clip(images, captions, cfg, seed=4, steps=3, batch_size=8, log=lambda s: None)
    assert ec.fingerprint(a) == ec.fingerprint(b) != ec.fingerprint(c)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    # the global RNG is left as it was: the run's own draws do not depend on it
    torch.manual_seed(7)
    first = torch.rand(1)
    torch.manual_seed(7)
    ec.train_clip(images, captions, cfg, seed=3, steps=1, batch_size=8, log=lambda s: None)
    assert torch.equal(torch.rand(1), first)


def test_cached_is_trained_once_then_loaded_and_refuses_other_settings(shapes16, tmp_path,
                                                                      monkeypatch):
    d = tmp_path / "evaluation_clip"
    model = ec.cached_evaluation_clip(d, shapes16, steps=2, log=lambda s: None)
    assert model.config.image_tower == "vit"
    assert (d / "gaf.json").is_file() and (d / "evaluation_clip.json").is_file()

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(ec, "train_clip", no_training)
    again = ec.cached_evaluation_clip(d, shapes16, steps=2, log=lambda s: None)
    assert ec.fingerprint(again) == ec.fingerprint(model)
    with pytest.raises(BadConfig, match="trained with other settings"):
        ec.cached_evaluation_clip(d, shapes16, steps=3, log=lambda s: None)
    other = gaf.create("dataset", "shapes", resolution=16, size=64, seed=1)
    with pytest.raises(BadConfig, match="trained with other settings"):
        ec.cached_evaluation_clip(d, other, steps=2, log=lambda s: None)


class _Pipe:
    """A pipeline whose conditioner holds a CLIP (as clip-text does)."""

    def __init__(self, clip):
        self.conditioner = torch.nn.Module()
        self.conditioner.clip = clip


def test_a_pipeline_that_generates_with_the_evaluation_clip_is_refused(shapes16, tmp_path):
    images, captions = _pairs(shapes16)
    judge = ec.train_clip(images, captions, CLIPConfig(image_tower="vit", **SMALL), seed=0,
                          steps=1, batch_size=8, log=lambda s: None)
    gaf.save(judge, tmp_path / "judge", kind="encoder", name="clip")
    copy = gaf.create("conditioner", "clip-text", clip=str(tmp_path / "judge"))
    for pipe in (_Pipe(judge), _Pipe(copy.clip)):
        assert ec.generation_clips(pipe)
        with pytest.raises(BadConfig, match="must never generate, guide or rerank"):
            ec.check_independent(pipe, judge)
    torch.manual_seed(0)
    ec.check_independent(_Pipe(gaf.create("encoder", "clip", **SMALL)), judge)
    ec.check_independent(object(), judge)


def test_auc_against_the_pairwise_definition():
    assert auc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auc([1, 1], [True, False]) == 0.5
    assert math.isnan(auc([1, 2], [True, True]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=2, max_size=30))
def test_auc_properties(items):
    scores, labels = [float(s) for s, _ in items], [b for _, b in items]
    a = auc(scores, labels)
    if all(labels) or not any(labels):
        assert math.isnan(a)
        return
    assert 0.0 <= a <= 1.0
    # reversing the order of the scores, or which class is positive, mirrors it
    assert auc([-s for s in scores], labels) == pytest.approx(1 - a)
    assert auc(scores, [not b for b in labels]) == pytest.approx(1 - a)
    # the Mann-Whitney form: U / (n_pos n_neg) with midranks
    ranks = torch.tensor(scores, dtype=torch.float64)
    order = [sum((r > q) + 0.5 * (r == q) for q in ranks.tolist()) + 0.5 for r in ranks.tolist()]
    pos = [r for r, b in zip(order, labels) if b]
    n1, n0 = len(pos), len(labels) - len(pos)
    assert a == pytest.approx((sum(pos) - n1 * (n1 + 1) / 2) / (n1 * n0))


class _Axis:
    """Images are their features; a caption maps to its colour's axis plus its shape's."""

    def encode_image(self, images):
        return images.flatten(1)

    def encode_text(self, captions):
        out = torch.zeros(len(captions), len(COLOURS) + len(SHAPES))
        for i, c in enumerate(captions):
            words = c.split()
            out[i, next(k for k, w in enumerate(COLOURS) if w in words)] = 1.0
            out[i, len(COLOURS) + next(k for k, w in enumerate(SHAPES) if w in words)] = 1.0
        return out


def _image(*words):
    x = torch.zeros(len(COLOURS) + len(SHAPES))
    for w in words:
        x[COLOURS.index(w) if w in COLOURS else len(COLOURS) + SHAPES.index(w)] = 1.0
    return x


def test_clip_metrics_closed_form():
    captions = ["a red circle", "a blue square", "a green cross", "a red square"]
    images = torch.stack([_image("red", "circle"),           # cos 1, every swap 1/2: hit
                          _image("blue", "green", "square"),  # cos 2/sqrt6, ties "green"
                          _image("green", "cross"),           # cos 1: hit
                          _image("blue", "square")])          # cos 1/2, "blue" beats it
    got = ec.clip_metrics(_Axis(), images, captions)
    per = torch.tensor([1.0, 2 / 6 ** 0.5, 1.0, 0.5], dtype=torch.float64) * 2.5
    assert got["clip_score"] == pytest.approx(float(per.mean()))
    assert got["clip_score_se"] == pytest.approx(float(per.std() / 2))
    # R-precision: the own caption must beat every one-attribute swap (a tie does not)
    assert got["clip_r_precision"] == pytest.approx(0.5)
    assert got["clip_r_precision_se"] == pytest.approx(math.sqrt(0.25 / 4))
    assert 0 < got["clip_r_precision_floor"] < 0.2
