"""The random-position check of issue 15 §3: an FD that sees what captions say.

A "generator" that returns the real eval scenes of set A with every object moved to
a random cell must score clearly worse than the real-vs-real floor under
:func:`distribution_distances` with the ``layout`` feature net (samples of A against
the real images of a disjoint set B, floor = FD(real A, real B)); the version-1
globally pooled net, trained the same way, does not see it — so the check can fail.

Objects are moved *independently* (first and second object each to a uniformly
random cell, drawn from the named stream ``"random-position"``): single objects are
uniform over the cells in real data, so moving them alone leaves the distribution
unchanged; what an unconditional distance can see is that moved pairs lose their
adjacency (and 1/9 share a cell), and that real pair cells are weighted by their
neighbour count. A second "generator" ignores position words but keeps the relations:
the first object in the middle cell, the second next to it as the relation says; it
collapses the distribution of positions, which any distance should see, and the
layout features see it far more clearly. Sizes: 16x16 ``shapes``, 2000 training
images, 15 epochs, A and B = 500 eval images each (about 10-15 s per network on one
CPU thread).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from gaf.plugins.images.shapes import RELATION_STEP, ShapesConfig, ShapesDataset, render
from gaf.plugins.metrics.features import train_feature_net
from gaf.plugins.metrics.frechet import distribution_distances
from gaf.seeding import rng

pytestmark = pytest.mark.slow

R, N_TRAIN, EPOCHS, N = 16, 2000, 15, 500


def moved_scene(attributes: dict, g) -> dict:
    """The scene with every object moved, independently, to a uniformly random cell."""
    out = copy.deepcopy(attributes)
    for obj in [out] + ([out["second"]] if out.get("second") else []):
        obj["row"], obj["col"] = int(g.integers(3)), int(g.integers(3))
        obj.pop("position", None)  # render reads row/col; the old name would be stale
    return out


def in_the_middle(attributes: dict) -> dict:
    """The first object in the middle cell, the second next to it as the relation says."""
    out = copy.deepcopy(attributes)
    out["row"], out["col"] = 1, 1
    out.pop("position", None)
    if out.get("second"):
        dr, dc = RELATION_STEP[out["relation"]]
        out["second"]["row"], out["second"]["col"] = 1 + dr, 1 + dc
        out["second"].pop("position", None)
    return out


@pytest.fixture(scope="module")
def data():
    train = ShapesDataset(ShapesConfig(resolution=R, split="train", size=N_TRAIN, seed=0))
    ev = ShapesDataset(ShapesConfig(resolution=R, split="eval", size=3 * N, seed=0))
    # the first N eval items measure the nets' held-out accuracy; A and B follow
    a_idx, b_idx = range(N, 2 * N), range(2 * N, 3 * N)
    real_a = torch.stack([ev[i]["image"] for i in a_idx])
    real_b = torch.stack([ev[i]["image"] for i in b_idx])
    g = rng(0, "random-position")
    scenes = [(ev.attributes(i), moved_scene(ev.attributes(i), g)) for i in a_idx]
    moved_a = torch.stack([render(m, R) for _, m in scenes])
    middle_a = torch.stack([render(in_the_middle(o), R) for o, _ in scenes])
    return train, ev, real_a, real_b, moved_a, scenes, middle_a


def _net(data, variant):
    train, ev = data[0], data[1]
    return train_feature_net(train, ev, epochs=EPOCHS, batch_size=64, seed=0,
                             variant=variant, max_eval=N, compute_floor=False,
                             num_threads=1)


@pytest.fixture(scope="module")
def layout_net(data):
    return _net(data, "layout")


@pytest.fixture(scope="module")
def pooled_net(data):
    return _net(data, "pooled")


def test_the_moved_scenes_really_moved(data):
    scenes = data[5]
    cells = [(o["row"], o["col"], m["row"], m["col"]) for o, m in scenes
             for o, m in [(o, m)] + ([(o["second"], m["second"])] if o["second"] else [])]
    changed = sum(a != c or b != d for a, b, c, d in cells) / len(cells)
    assert 0.8 < changed < 0.95  # 8/9 of the objects land in another cell
    pairs = [(m["row"], m["col"], m["second"]["row"], m["second"]["col"])
             for _, m in scenes if m["second"]]
    adjacent = sum(abs(a - c) + abs(b - d) == 1 for a, b, c, d in pairs) / len(pairs)
    assert 0.15 < adjacent < 0.5  # 1/3 by chance; every real pair is adjacent
    assert all(abs(o["row"] - o["second"]["row"]) + abs(o["col"] - o["second"]["col"]) == 1
               for o, _ in scenes if o["second"])


def test_layout_features_put_randomly_placed_objects_far_above_the_floor(data, layout_net):
    _, _, real_a, real_b, moved_a, *_ = data
    assert layout_net.variant == "layout" and layout_net.config.layout_head
    assert layout_net.info["layout_accuracy"]["scenes"] > 0.6
    out = distribution_distances(layout_net, moved_a, real_a, real_b, kid_subsets=50)
    print(f"\nlayout: {out}")
    assert out["fd_floor"] > 0
    assert out["fd"] > 2 * out["fd_floor"]
    assert out["kid"] > out["kid_floor"]
    # the real images of A score exactly the floor, by construction
    same = distribution_distances(layout_net, real_a, real_a, real_b, kid_subsets=50)
    assert same["fd"] == same["fd_floor"] == out["fd_floor"]
    assert same["kid"] == same["kid_floor"] == out["kid_floor"]


def test_the_pooled_features_do_not_catch_it(data, layout_net, pooled_net):
    _, _, real_a, real_b, moved_a, *_ = data
    assert pooled_net.variant == "pooled"
    with pytest.warns(UserWarning, match="position-blind"):
        pooled = distribution_distances(pooled_net, moved_a, real_a, real_b, kid_subsets=50)
    layout = distribution_distances(layout_net, moved_a, real_a, real_b, kid_subsets=50)
    print(f"\npooled: {pooled}")
    ratio_pooled = pooled["fd"] / pooled["fd_floor"]
    ratio_layout = layout["fd"] / layout["fd_floor"]
    assert ratio_pooled < 2
    assert ratio_layout > 1.5 * ratio_pooled


def test_a_generator_that_puts_everything_in_the_middle(data, layout_net, pooled_net):
    # ignores every position word, keeps every relation: the positions collapse
    _, _, real_a, real_b, _, _, middle_a = data
    layout = distribution_distances(layout_net, middle_a, real_a, real_b, kid_subsets=50)
    with pytest.warns(UserWarning, match="position-blind"):
        pooled = distribution_distances(pooled_net, middle_a, real_a, real_b, kid_subsets=50)
    print(f"\nmiddle, layout: {layout}\nmiddle, pooled: {pooled}")
    assert layout["fd"] > 10 * layout["fd_floor"]
    assert layout["kid"] - layout["kid_floor"] > 5 * (layout["kid_se"] + layout["kid_floor_se"])
    assert layout["fd"] / layout["fd_floor"] > 2 * pooled["fd"] / pooled["fd_floor"]


@pytest.mark.benchmark
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benchmark_at_the_evaluations_sizes(seed):
    """The same checks at the sizes of the text-to-image evaluation: 32x32, the feature
    net's defaults (5000 training images, 12 epochs, width 16), A and B = 200 images
    (``n_captions``). Run with ``pytest -m benchmark -s``; prints the scores."""
    res, n = 32, 200
    train = ShapesDataset(ShapesConfig(resolution=res, split="train", size=5000, seed=0))
    ev = ShapesDataset(ShapesConfig(resolution=res, split="eval", size=3 * n, seed=0))
    a_idx, b_idx = range(n, 2 * n), range(2 * n, 3 * n)
    real_a = torch.stack([ev[i]["image"] for i in a_idx])
    real_b = torch.stack([ev[i]["image"] for i in b_idx])
    g = rng(seed, "random-position")
    moved = torch.stack([render(moved_scene(ev.attributes(i), g), res) for i in a_idx])
    middle = torch.stack([render(in_the_middle(ev.attributes(i)), res) for i in a_idx])
    ratios = {}
    for variant in ("layout", "pooled"):
        net = train_feature_net(train, ev, seed=seed, variant=variant, max_eval=n,
                                compute_floor=False, num_threads=1)
        for name, fake in (("random", moved), ("middle", middle)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = distribution_distances(net, fake, real_a, real_b, kid_subsets=50)
            ratios[variant, name] = out["fd"] / out["fd_floor"]
            print(f"\nseed {seed} {variant} {name}: accuracy {net.accuracy:.3f} "
                  f"layout {net.info['layout_accuracy']} fd {out['fd']:.3f} "
                  f"floor {out['fd_floor']:.3f} ratio {ratios[variant, name]:.2f} "
                  f"kid {out['kid']:.4f} ± {out['kid_se']:.4f} "
                  f"floor {out['kid_floor']:.4f} ± {out['kid_floor_se']:.4f}")
    assert ratios["layout", "middle"] > ratios["pooled", "middle"]
