"""The layout-aware feature net and FD/KID on disjoint sets (issue 15 §3): KID with its
standard error against float64 references, ``distribution_distances`` on Gaussians, the
per-cell layout targets, variant options and loading version-1 files.

The random-position check itself (moved objects score well above the floor with the
layout features, not with the pooled ones) is tests/metrics/test_random_position.py.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadConfig, BadData
from gaf.plugins.images.shapes import COLOURS, SHAPES, SIZES, ShapesConfig, ShapesDataset, render
from gaf.plugins.metrics.features import (META_FILE, FeatureNet, FeatureNetConfig,
                                          cached_feature_net, layout_targets,
                                          train_feature_net)
from gaf.plugins.metrics.frechet import (distribution_distances, fd_from_features,
                                         kid_with_se, mmd2_unbiased)
from gaf.seeding import rng, torch_generator


# ----------------------------------------------------------------------- KID with SE


def ref_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, by explicit float64 loops over pairs."""
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_with_se_is_the_mean_over_the_named_streams_subsets():
    g = np.random.default_rng(0)
    f1, f2 = g.normal(size=(12, 3)), g.normal(0.5, 1.0, size=(10, 3))
    out = kid_with_se(torch.from_numpy(f1), torch.from_numpy(f2), subsets=4, subset_size=6,
                      seed=7)
    # reference: the same subsets, drawn from the same named stream, float64 loops
    gen = torch_generator(7, "kid-subsets")
    vals = []
    for _ in range(4):
        i1 = torch.randperm(12, generator=gen)[:6].numpy()
        i2 = torch.randperm(10, generator=gen)[:6].numpy()
        vals.append(ref_mmd2(f1[i1], f2[i2]))
    vals = np.array(vals)
    assert out["kid"] == pytest.approx(vals.mean(), rel=1e-10, abs=1e-12)
    assert out["kid_std"] == pytest.approx(vals.std(), rel=1e-9, abs=1e-12)
    # m = 6 of N = 10: se = std · √(m / (N − m))
    assert out["kid_se"] == pytest.approx(vals.std() * math.sqrt(6 / 4), rel=1e-9)
    assert out["subset_size"] == 6.0
    # default subset size: half the smaller set
    assert kid_with_se(torch.from_numpy(f1), torch.from_numpy(f2), subsets=2)["subset_size"] == 5.0


def test_kid_with_se_of_whole_sets_is_the_plain_mmd_without_se():
    g = np.random.default_rng(1)
    f1, f2 = g.normal(size=(7, 4)), g.normal(size=(7, 4))
    out = kid_with_se(torch.from_numpy(f1), torch.from_numpy(f2), subset_size=7)
    assert out["kid"] == pytest.approx(ref_mmd2(f1, f2), rel=1e-10, abs=1e-12)
    assert math.isnan(out["kid_se"]) and out["kid_std"] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        kid_with_se(torch.zeros(3, 2), torch.zeros(3, 2), subset_size=1)


def test_kid_se_covers_the_spread_of_the_full_sample_estimate():
    # the standard error is a claim about the spread of KID over independent draws of
    # the two sets: check it against that spread over 40 seeded repetitions (Gaussians
    # with different means, so the per-draw spread is not degenerate)
    ses, kids = [], []
    for r in range(40):
        g = rng(0, "kid-se-check", r)
        a = torch.from_numpy(g.normal(0.0, 1.0, size=(60, 2)))
        b = torch.from_numpy(g.normal(0.3, 1.0, size=(60, 2)))
        out = kid_with_se(a, b, subsets=30, seed=r)
        ses.append(out["kid_se"])
        kids.append(mmd2_unbiased(a, b))
    spread, mean_se = float(np.std(kids)), float(np.mean(ses))
    # same order of magnitude (the subsampling estimate is first-order, not exact)
    assert 0.4 * spread < mean_se < 2.5 * spread


# ------------------------------------------------------------ distribution distances


class Linear:
    """A stand-in feature net: features = images flattened (exercises the protocol)."""

    variant = "layout"
    accuracy = 0.75

    def features(self, x):
        return x.flatten(1).double()


def test_distribution_distances_protocol_on_gaussians():
    g = np.random.default_rng(2)
    real = torch.from_numpy(g.normal(size=(200, 3)))
    ref = torch.from_numpy(g.normal(size=(200, 3)))
    fake = torch.from_numpy(g.normal(size=(200, 3)) * 2.0 + 1.0)
    out = distribution_distances(Linear(), fake, real, ref, kid_subsets=20, seed=3)
    assert out["fd"] == pytest.approx(fd_from_features(fake, ref), rel=1e-12)
    assert out["fd_floor"] == pytest.approx(fd_from_features(real, ref), rel=1e-12)
    # population closed form for N(1, 4I) vs N(0, I): 3·1² + 3·(2 − 1)² = 6
    assert out["fd"] == pytest.approx(6.0, rel=0.3)
    assert out["fd_floor"] < 0.3
    assert out["kid"] - out["kid_floor"] > 5 * (out["kid_se"] + out["kid_floor_se"])
    assert out["feature_accuracy"] == 0.75
    assert (out["n_fake"], out["n_reference"], out["kid_subset_size"]) == (200.0, 200.0, 100.0)
    # the real images of A score exactly the floor, in FD and in KID (same subsets)
    same = distribution_distances(Linear(), real, real, ref, kid_subsets=20, seed=3)
    assert same["fd"] == same["fd_floor"] and same["kid"] == same["kid_floor"]
    assert same["kid_se"] == same["kid_floor_se"]
    # deterministic for a seed, other subsets for another
    again = distribution_distances(Linear(), fake, real, ref, kid_subsets=20, seed=3)
    assert again == out
    assert distribution_distances(Linear(), fake, real, ref, kid_subsets=20,
                                  seed=4)["kid"] != out["kid"]
    with pytest.raises(ValueError, match="same count"):
        distribution_distances(Linear(), fake[:100], real, ref)


def test_distribution_distances_warns_for_a_pooled_net():
    net = Linear()
    net.variant = "pooled"
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch_generator(0, "x"))
    with pytest.warns(UserWarning, match="position-blind"):
        distribution_distances(net, x, x, x, kid_subsets=2)


# ------------------------------------------------------------------ layout targets


obj = st.fixed_dictionaries({"colour": st.sampled_from(COLOURS), "shape": st.sampled_from(SHAPES),
                             "size": st.sampled_from(SIZES), "row": st.integers(0, 2),
                             "col": st.integers(0, 2)})


class Items:
    def __init__(self, attrs):
        self.attrs = attrs

    def __len__(self):
        return len(self.attrs)

    def __getitem__(self, i):
        return {"image": torch.zeros(3, 16, 16), "label": 0, "attributes": self.attrs[i]}


@settings(max_examples=50, deadline=None)
@given(first=obj, second=st.one_of(st.none(), obj))
def test_layout_targets_mark_each_objects_cell_and_size(first, second):
    attrs = dict(first, second=second, relation=None if second is None else "left of")
    t = layout_targets(Items([attrs]))
    assert t.shape == (1, 9) and t.dtype == torch.int64
    expected = [0] * 9
    for o in [first] + ([second] if second else []):
        cell = o["row"] * 3 + o["col"]
        expected[cell] = max(expected[cell], 1 + SIZES.index(o["size"]))
    assert t[0].tolist() == expected


def test_layout_targets_of_shapes_and_of_datasets_without_attributes():
    ds = ShapesDataset(ShapesConfig(resolution=16, size=40, seed=0))
    t = layout_targets(ds)
    counts = [1 + bool(ds.attributes(i)["second"]) for i in range(40)]
    assert (t > 0).sum(1).tolist() == counts  # two objects never share a cell
    assert layout_targets(ds, limit=5).shape == (5, 9)
    assert layout_targets([{"image": torch.zeros(3, 4, 4), "label": 1}]) is None
    assert layout_targets(torch.zeros(4, 3, 4, 4)) is None


# -------------------------------------------------------------- variants and files


def test_variant_options_and_errors():
    assert FeatureNetConfig().variant == "layout"
    with pytest.raises(BadConfig, match="did you mean 'layout'"):
        train_feature_net([], [], variant="layuot")
    with pytest.raises(BadConfig, match="needs variant='layout'"):
        FeatureNet(FeatureNetConfig(variant="pooled", layout_head=True))
    with pytest.raises(BadData, match="attributes"):
        items = [{"image": torch.zeros(3, 16, 16), "label": i % 2} for i in range(8)]
        train_feature_net(items, list(items), layout=True, epochs=1, compute_floor=False)


def test_a_version_1_file_loads_as_pooled_and_is_not_reused_for_the_new_metric(tmp_path):
    torch.manual_seed(0)
    old = FeatureNet(FeatureNetConfig(num_classes=2, width=4, feature_dim=8, resolution=16,
                                      variant="pooled"))
    old.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    # rewrite it as gaf wrote version 1: no variant, no layout_head
    meta["version"] = 1
    del meta["config"]["variant"], meta["config"]["layout_head"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    loaded = FeatureNet.load(tmp_path)
    assert loaded.variant == "pooled"
    x = torch.rand(4, 3, 16, 16, generator=torch_generator(0, "x")) * 2 - 1
    assert torch.equal(loaded.features(x), old.features(x))
    # a version-1 file that names a variant is not a version-1 file
    meta["config"]["variant"] = "layout"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BadData, match="version-1"):
        FeatureNet.load(tmp_path)
    del meta["config"]["variant"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    # the evaluation asks for a layout net: the old one is replaced, not reused
    ds = ShapesDataset(ShapesConfig(resolution=16, size=64, seed=0))
    ev = ShapesDataset(ShapesConfig(resolution=16, split="eval", size=32, seed=0))
    net = cached_feature_net(tmp_path, ds, ev, epochs=1, width=4, feature_dim=8,
                             compute_floor=False, num_threads=1)
    assert net.variant == "layout" and net.config.layout_head
    assert json.loads((tmp_path / META_FILE).read_text())["version"] == 2
    assert FeatureNet.load(tmp_path).variant == "layout"
    # and asking for the pooled variant keeps a pooled one
    pooled = cached_feature_net(tmp_path, ds, ev, variant="pooled", epochs=1, width=4,
                                feature_dim=8, compute_floor=False, num_threads=1)
    assert pooled.variant == "pooled"
    assert cached_feature_net(tmp_path, ds, ev, variant="pooled").variant == "pooled"
