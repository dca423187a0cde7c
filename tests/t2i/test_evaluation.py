"""The one text-to-image evaluation (gaf.plugins.t2i.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf.plugins.t2i import evaluation as E
from gaf.plugins.t2i.evaluation import TIMINGS, shuffled
from gaf.seeding import rng


@given(st.integers(0, 40), st.integers(0, 2 ** 32))
def test_shuffled_is_a_seeded_derangement(n, seed):
    items = [f"caption {i}" for i in range(n)]
    out = shuffled(items, seed)
    assert sorted(out) == sorted(items)
    if n >= 2:
        assert all(a != b for a, b in zip(out, items))  # no caption keeps its image
    assert shuffled(items, seed) == out  # a pure function of (items, seed)


def test_shuffled_draws_from_its_named_stream():
    items = list(range(6))
    perm = rng(3, "floor-derangement").permutation(6).tolist()
    out = shuffled(items, 3)
    for k in range(6):  # item perm[k - 1] goes to place perm[k]
        assert out[perm[k]] == items[perm[k - 1]]


# ---------------------------------------------------------------------- the evaluation



def shapes(split, size, **options):
    return gaf.create("dataset", "shapes", resolution=16, split=split, size=size, seed=1,
                      **options)


@pytest.fixture(scope="module")
def data():
    return {"train": shapes("train", 300), "eval": shapes("eval", 120),
            "swapped": shapes("swapped", 40)}


class RealImages:
    """A "generator" that draws the real image of its caption (the ceiling)."""

    def __init__(self, *datasets, rotate=0):
        self.table = {}
        for ds in datasets:
            for i, c in enumerate(ds.captions()):
                self.table.setdefault(c, ds[i]["image"])
        self.keys = list(self.table)
        self.rotate = rotate
        self.calls = []

    def __call__(self, conditions, *, generators=None, seed=0, **options):
        self.calls.append((list(conditions), [g.initial_seed() for g in generators],
                           dict(options)))
        if self.rotate:  # another caption's image: ignores its prompt
            return torch.stack([self.table[self.keys[(self.keys.index(c) + self.rotate)
                                                     % len(self.keys)]] for c in conditions])
        return torch.stack([self.table[c] for c in conditions])

    def evaluations_per_image(self, **options):
        return options["steps"] * 2 + 1  # what the evaluation must report as given


class Noise:
    """Images drawn from the per-sample generators only."""

    def __init__(self):
        self.calls = []

    def __call__(self, conditions, *, generators=None, seed=0, **options):
        self.calls.append((list(conditions), [g.initial_seed() for g in generators],
                           dict(options)))
        return torch.stack([torch.rand(3, 16, 16, generator=g) * 2 - 1 for g in generators])

    def evaluations_per_image(self, **options):
        return options["steps"] * 2 + 1  # what the evaluation must report as given


def evaluate(pipe, data, **kwargs):
    args = dict(train_ds=data["train"], eval_ds=data["eval"], swapped_ds=data["swapped"],
                n_captions=30, fd_images=0, throughput_batch=0, batch_size=7, seed=5,
                log=lambda _: None)
    args.update(kwargs)
    return E.evaluate_pipeline(pipe, {"steps": 3, "guidance": 2.0}, **args)


def test_a_generator_that_draws_the_real_images_scores_the_ceiling(data):
    pipe = RealImages(data["eval"], data["swapped"])
    out = evaluate(pipe, data)
    for name in ("unseen", "unseen_attrs", "swapped", "ceiling"):
        assert out[f"{name}_exact"] == 1.0 and out[f"{name}_exact_se"] == 0.0, name
    assert out["swapped_pair_binding"] == 1.0
    assert out["unseen_n"] == 30 and out["swapped_n"] == 30
    assert out["floor_exact"] < 0.2  # the same images against shuffled captions
    # diversity: the same real images give exactly the data's entropy
    assert out["diversity_size"] == out["diversity_size_real"] > 0
    assert out["evaluations_per_image"] == 3 * 2 + 1


def test_a_generator_that_ignores_its_caption_scores_near_the_floor(data):
    out = evaluate(RealImages(data["eval"], data["swapped"], rotate=7), data)
    assert out["unseen_exact"] <= out["floor_exact"] + 0.15
    assert out["unseen_colour"] < 0.5 and out["ceiling_colour"] == 1.0
    assert out["swapped_pair_binding"] < 0.2


def test_caption_sets_on_hand_built_captions():
    train = ["a red circle in the top left", "top left: a blue square"]
    ev = ["a red circle in the top left",  # seen word for word
          "top left: a red circle",  # new wording, seen attribute set
          "a green circle in the middle",  # new on both counts
          "a blue square in the top left",  # new wording of a seen set
          "a small green circle in the middle"]  # a new set (it states a size)
    assert E.caption_sets(train, ev, 10) == {"unseen": [1, 2, 3, 4], "unseen_attrs": [2, 4]}
    assert E.caption_sets(train, ev, 2) == {"unseen": [1, 2], "unseen_attrs": [2, 4]}


def test_caption_sets_of_the_dataset_match_a_direct_count(data):
    train_caps = set(data["train"].captions())
    sets = E.caption_sets(data["train"].captions(), data["eval"].captions(), 1000)
    caps = data["eval"].captions()
    assert sets["unseen"] == [i for i, c in enumerate(caps) if c not in train_caps]
    seen_attrs = {E.stated(data["train"].caption(i)) for i in range(300)}
    assert all(E.stated(caps[i]) not in seen_attrs for i in sets["unseen_attrs"])
    assert set(sets["unseen_attrs"]) <= set(sets["unseen"])  # a new set is a new string


@given(st.integers(0, 200), st.integers(1, 200))
def test_binomial_se_matches_the_float64_formula(hits, extra):
    k = hits + extra
    p = hits / k
    assert E.binomial_se(p, k) == pytest.approx(np.sqrt(np.float64(p) * (1 - p) / k),
                                                rel=1e-12, abs=1e-15)


def test_attribute_scores_count_one_judgement_per_object(data):
    ev = data["swapped"].evaluator()
    imgs = torch.stack([data["swapped"][i]["image"] for i in range(4)])
    caps = data["swapped"].captions()[:4]
    out = E.attribute_scores(ev, imgs, list(reversed(caps)))
    ref = ev.score(imgs, list(reversed(caps)))
    for key in ("colour", "shape", "exact"):
        assert out[key] == ref[key]
    k = 8  # two objects per swapped image
    assert out["colour_se"] == pytest.approx(math.sqrt(out["colour"] * (1 - out["colour"]) / k))
    assert out["exact_se"] == pytest.approx(math.sqrt(out["exact"] * (1 - out["exact"]) / 4))


@given(st.lists(st.integers(1, 30), min_size=1, max_size=8))
def test_entropy_bits_matches_the_closed_form(counts):
    readings = [j for j, c in enumerate(counts) for _ in range(c)]
    p = np.array(counts, dtype=np.float64) / sum(counts)
    assert E.entropy_bits(readings) == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12)
    assert E.entropy_bits(["a"] * 5 + ["b"] * 5) == pytest.approx(1.0)
    assert E.entropy_bits(list(range(9))) == pytest.approx(math.log2(9))


def test_every_pipeline_sees_the_same_captions_and_seeds(data):
    a, b = RealImages(data["eval"], data["swapped"]), Noise()
    evaluate(a, data)
    evaluate(b, data)
    assert a.calls == b.calls
    first = a.calls[0]
    captions = data["eval"].captions()
    # eval item i is sampled with the generator seeded seed + i (seed 5)
    for cond, s in zip(first[0], first[1]):
        assert captions[s - 5] == cond


def test_the_evaluation_is_deterministic_but_for_its_timings(data):
    first, second = evaluate(Noise(), data), evaluate(Noise(), data)
    assert first["sampling_s"] >= 0 and first["sampled_n"] > 0
    for out in (first, second):
        for key in TIMINGS:
            out.pop(key, None)
    assert first == second


def test_sweep_settings_are_scored_on_the_unseen_set(data):
    pipe = RealImages(data["eval"], data["swapped"])
    out = evaluate(pipe, data, sweep={"g1": {"steps": 3, "guidance": 1.0},
                                      "g2": {"steps": 3, "guidance": 2.0}})
    assert out["g1_exact"] == out["g2_exact"] == out["unseen_exact"] == 1.0
    assert {"guidance": 1.0, "steps": 3} in [c[2] for c in pipe.calls]


def test_a_sweep_setting_is_sampled_once_for_the_evaluator_and_the_clip(data):
    torch.manual_seed(0)
    clip = gaf.create("encoder", "clip", embed_dim=8, image_width=8, image_heads=2,
                      text_width=16, text_layers=1, text_heads=2, resolution=16)
    pipe = Noise()
    out = evaluate(pipe, data, clip_model=clip,
                   sweep={"g1": {"steps": 3, "guidance": 1.0},
                          "g2": {"steps": 3, "guidance": 2.0}})
    settings = [c[2] for c in pipe.calls]
    # g2 is the options themselves (no extra draw); g1 is drawn once, in batches of 7
    assert settings.count({"steps": 3, "guidance": 1.0}) == math.ceil(30 / 7)
    assert out["g2_clip_score"] == out["clip_score"]
    assert 0.0 <= out["g1_clip_score"] <= 2.5


def test_fd_uses_a_disjoint_reference_set(data, monkeypatch):
    seen = {}

    def fake_distances(net, fake, real, reference, **kwargs):
        seen.update(fake=fake, real=real, reference=reference, net=net)
        return {"fd": 1.0, "fd_floor": 0.5, "kid": 0.1, "kid_se": 0.01, "kid_floor": 0.0,
                "kid_floor_se": 0.01, "feature_accuracy": 0.9}

    import gaf.plugins.metrics.frechet as frechet

    monkeypatch.setattr(frechet, "distribution_distances", fake_distances)
    out = evaluate(RealImages(data["eval"], data["swapped"]), data, fd_images=20,
                   feature_net="net")
    assert out["fd"] == 1.0 and out["kid_floor_se"] == 0.01 and seen["net"] == "net"
    ev = data["eval"]
    assert torch.equal(seen["fake"], seen["real"])  # the real-image generator
    assert torch.equal(seen["real"], torch.stack([ev[i]["image"] for i in range(20)]))
    assert torch.equal(seen["reference"], torch.stack([ev[i]["image"] for i in range(20, 40)]))


def test_no_unseen_caption_is_bad_data(data):
    from gaf.errors import BadData

    with pytest.raises(BadData, match="unseen"):
        evaluate(Noise(), data, train_ds=data["eval"])


def test_fd_and_kid_of_the_real_images_are_exactly_their_floors(data):
    from gaf.plugins.metrics.features import FeatureNet, FeatureNetConfig

    torch.manual_seed(0)
    net = FeatureNet(FeatureNetConfig(num_classes=30, feature_dim=8, width=4, resolution=16))
    net.eval()
    real = evaluate(RealImages(data["eval"], data["swapped"]), data, fd_images=30,
                    feature_net=net)
    assert real["fd"] == real["fd_floor"] and real["kid"] == real["kid_floor"]
    other = evaluate(RealImages(data["eval"], data["swapped"], rotate=7), data,
                     fd_images=30, feature_net=net)
    assert other["fd_floor"] == real["fd_floor"] and other["fd"] != real["fd"]


@pytest.mark.slow
def test_fd_trains_and_caches_a_feature_net_in_features_dir(data, tmp_path):
    out = evaluate(RealImages(data["eval"], data["swapped"]), data, fd_images=40,
                   features_dir=tmp_path / "features")
    assert out["fd"] == out["fd_floor"] and out["kid"] == out["kid_floor"]
    assert (tmp_path / "features").is_dir()  # cached for the next evaluation
    moved = evaluate(RealImages(data["eval"], data["swapped"], rotate=7), data, fd_images=40,
                     features_dir=tmp_path / "features")
    assert moved["fd_floor"] == out["fd_floor"]  # same real sets, same cached net
