"""The ``shapes`` dataset and its analytic evaluator."""

from __future__ import annotations

import random
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf import interfaces as I
from gaf.errors import BadConfig
from gaf.plugins.images import shapes as S
from gaf.plugins.images.shapes_eval import ShapesEvaluator, parse_caption


def make(**options):
    return gaf.create("dataset", "shapes", **options)


def scene_key(a):
    second = a["second"]
    return (a["colour"], a["shape"], a["size"], a["row"], a["col"], a["relation"],
            None if second is None else tuple(second[k] for k in S._OBJECT_KEYS))


def objects(a):
    return [a] + ([a["second"]] if a["second"] else [])


# ---------------------------------------------------------------------- contract


def test_registry_builds_a_dataset_with_the_item_contract():
    ds = make(resolution=32, split="train", size=20)
    assert isinstance(ds, I.Dataset) and ds.gaf_name == "shapes"
    assert (ds.resolution, ds.channels, ds.num_classes) == (32, 3, 30)
    assert len(ds.class_names) == 30 and ds.class_names[0] == "red circle"
    item = ds[0]
    assert set(item) == {"image", "caption", "label", "attributes"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert isinstance(item["caption"], str) and isinstance(item["label"], int)
    a = item["attributes"]
    assert set(a) == {"colour", "shape", "size", "position", "row", "col", "second", "relation"}
    assert item["label"] == S.COLOURS.index(a["colour"]) * 5 + S.SHAPES.index(a["shape"])
    assert ds.class_names[item["label"]] == f"{a['colour']} {a['shape']}"
    assert len(ds) == 20
    with pytest.raises(IndexError):
        ds[20]
    with pytest.raises(IndexError):
        ds[-21]
    assert ds[-1]["caption"] == ds[19]["caption"]


@pytest.mark.parametrize("options", [
    {"resolution": 24}, {"split": "test"}, {"size": 0}, {"two_objects": 1.5},
    {"eval_fraction": 0.0}, {"eval_fraction": 1.0}, {"validation_fraction": 0.0},
    {"eval_fraction": 0.6, "validation_fraction": 0.4},
])
def test_bad_options_are_bad_config(options):
    with pytest.raises(BadConfig):
        make(**options)


def test_captions_and_attributes_need_no_rendering_and_agree_with_items():
    ds = make(size=40, seed=5)
    caps = ds.captions()
    for i in range(0, 40, 7):
        item = ds[i]
        assert caps[i] == item["caption"] == ds.caption(i)
        assert ds.attributes(i) == item["attributes"]
        assert torch.equal(S.render(item["attributes"], 32), item["image"])
    assert ds.labels() == [ds[i]["label"] for i in range(40)]


# ---------------------------------------------------------------------- properties


@given(seed=st.integers(0, 2**40), index=st.integers(0, 299),
       split=st.sampled_from(S.SPLITS), resolution=st.sampled_from(S.RESOLUTIONS))
def test_items_are_a_pure_function_of_seed_and_index(seed, index, split, resolution):
    a = make(seed=seed, split=split, resolution=resolution, size=300)[index]
    b = make(seed=seed, split=split, resolution=resolution, size=index + 1)[index]
    assert a["caption"] == b["caption"] and a["attributes"] == b["attributes"]
    assert torch.equal(a["image"], b["image"])
    img = a["image"]
    assert img.dtype == torch.float32 and img.shape == (3, resolution, resolution)
    assert img.min() >= -1.0 and img.max() <= 1.0 and img.min() == -1.0
    assert 0 <= a["label"] < 30


@given(seed=st.integers(0, 2**40))
def test_different_seeds_give_different_items(seed):
    a, b = make(seed=seed, size=30), make(seed=seed + 1, size=30)
    assert a.captions() != b.captions()


@given(seed=st.integers(0, 2**32))
def test_train_and_eval_scenes_are_disjoint(seed):
    train, ev = make(seed=seed, size=3000), make(seed=seed, split="eval", size=1000)
    train_keys = {scene_key(train.attributes(i)) for i in range(len(train))}
    eval_keys = {scene_key(ev.attributes(i)) for i in range(len(ev))}
    assert train_keys.isdisjoint(eval_keys)
    swapped = make(seed=seed, split="swapped", size=200)
    assert train_keys.isdisjoint(scene_key(swapped.attributes(i)) for i in range(200))
    val = make(seed=seed, split="validation", size=1000)
    val_keys = {scene_key(val.attributes(i)) for i in range(len(val))}
    assert val_keys.isdisjoint(train_keys) and val_keys.isdisjoint(eval_keys)
    assert val_keys.isdisjoint(scene_key(swapped.attributes(i)) for i in range(200))


def _split_of_every_scene(**options):
    """split name -> the set of scene-table rows its pool draws from."""
    out = {}
    for split in ("train", "validation", "eval"):
        single, pair = make(split=split, size=1, **options)._pools()
        out[split] = set(single.tolist()) | set(pair.tolist())
    return out


@given(seed=st.integers(0, 2**32))
def test_validation_is_carved_from_train_by_the_same_scene_hash(seed):
    base = _split_of_every_scene(seed=seed)
    wider = _split_of_every_scene(seed=seed, validation_fraction=0.2)
    assert base["eval"] == wider["eval"]  # eval does not move with validation_fraction
    assert base["validation"] <= wider["validation"]
    assert wider["train"] | (wider["validation"] - base["validation"]) == base["train"]
    table = S._scene_table()
    usable = int((~table["heldout"]).sum())
    # the fractions of the non-held-out scenes: 0.1 eval, 0.05 validation, 0.85 train
    for split, want in (("eval", 0.1), ("validation", 0.05), ("train", 0.85)):
        assert abs(len(base[split]) / usable - want) < 0.01


def test_eval_items_do_not_depend_on_the_validation_split():
    a = make(split="eval", size=50, seed=3)
    b = make(split="eval", size=50, seed=3, validation_fraction=0.3)
    assert a.captions() == b.captions()


@given(seed=st.integers(0, 2**32), split=st.sampled_from(S.SPLITS))
def test_heldout_compositions_occur_only_in_heldout(seed, split):
    ds = make(seed=seed, split=split, size=500)
    for i in range(len(ds)):
        held = [S.is_heldout(o["colour"], o["shape"]) for o in objects(ds.attributes(i))]
        assert any(held) if split == "heldout" else not any(held)


def test_heldout_covers_every_held_pair_and_train_every_colour_and_shape():
    held = make(split="heldout", size=2000)
    seen = {(o["colour"], o["shape"]) for i in range(2000) for o in objects(held.attributes(i))}
    assert set(S.HELDOUT_PAIRS) <= seen
    train = make(size=2000)
    firsts = [train.attributes(i) for i in range(2000)]
    assert {a["colour"] for a in firsts} == set(S.COLOURS)
    assert {a["shape"] for a in firsts} == set(S.SHAPES)


@given(seed=st.integers(0, 2**32), split=st.sampled_from(S.SPLITS))
def test_two_object_scenes_are_consistent(seed, split):
    ds = make(seed=seed, split=split, size=200)
    n_two = 0
    for i in range(len(ds)):
        a = ds.attributes(i)
        assert S.POSITIONS[a["row"] * 3 + a["col"]] == a["position"]
        if a["second"] is None:
            assert a["relation"] is None
            continue
        n_two += 1
        b = a["second"]
        dr, dc = S.RELATION_STEP[a["relation"]]
        assert (b["row"], b["col"]) == (a["row"] + dr, a["col"] + dc)
        assert b["colour"] != a["colour"]
    assert n_two > 0
    if split == "swapped":
        assert n_two == len(ds)


def test_swapped_pairs_exchange_colours_only():
    ds = make(split="swapped", size=100, seed=2)
    for k in range(0, 100, 2):
        a, b = ds.attributes(k), ds.attributes(k + 1)
        assert ds.template(k) == ds.template(k + 1)
        assert (a["colour"], a["second"]["colour"]) == (b["second"]["colour"], b["colour"])
        assert a["shape"] != a["second"]["shape"]
        for key in ("shape", "size", "row", "col"):
            assert a[key] == b[key] and a["second"][key] == b["second"][key]
        assert a["relation"] == b["relation"]
        assert ds.caption(k) != ds.caption(k + 1)


def test_every_template_is_used():
    ds = make(size=500)
    used = {(ds.attributes(i)["second"] is None, ds.template(i)) for i in range(500)}
    assert used == ({(True, t) for t in range(len(S.SINGLE_TEMPLATES))}
                    | {(False, t) for t in range(len(S.PAIR_TEMPLATES))})


cells = st.integers(0, 8)


@st.composite
def scenes(draw):
    obj = {"colour": draw(st.sampled_from(S.COLOURS)), "shape": draw(st.sampled_from(S.SHAPES)),
           "size": draw(st.sampled_from(S.SIZES))}
    cell = draw(cells)
    obj.update(position=S.POSITIONS[cell], row=cell // 3, col=cell % 3, second=None,
               relation=None)
    if draw(st.booleans()):
        rel = draw(st.sampled_from(S.RELATIONS))
        dr, dc = S.RELATION_STEP[rel]
        row, col = obj["row"] + dr, obj["col"] + dc
        if 0 <= row <= 2 and 0 <= col <= 2:
            colour2 = draw(st.sampled_from([c for c in S.COLOURS if c != obj["colour"]]))
            obj["second"] = {"colour": colour2, "shape": draw(st.sampled_from(S.SHAPES)),
                             "size": draw(st.sampled_from(S.SIZES)),
                             "position": S.POSITIONS[row * 3 + col], "row": row, "col": col}
            obj["relation"] = rel
    return obj


@given(scene=scenes(), template=st.integers(0, 5))
def test_parse_caption_inverts_every_template(scene, template):
    text = S.caption(scene, template)
    assert parse_caption(text) == S.caption_attributes(scene, template)


def test_parse_caption_reads_free_variants_and_rejects_non_captions():
    a = parse_caption("A big Red circle in the center.")
    assert (a["size"], a["colour"], a["shape"], a["position"]) == ("large", "red", "circle",
                                                                   "middle")
    b = parse_caption("a tiny blue square under a green cross")
    assert b["relation"] == "below" and b["second"]["colour"] == "green" and b["size"] == "small"
    for bad in ("a dog", "a red circle a blue square", "a red circle a blue square a green cross"):
        with pytest.raises(ValueError):
            parse_caption(bad)


# ---------------------------------------------------------------------- evaluator


def batch(ds, n):
    return torch.stack([ds[i]["image"] for i in range(n)]), ds.captions()[:n]


@pytest.mark.parametrize("resolution", S.RESOLUTIONS)
def test_evaluator_is_exact_on_real_images_and_at_chance_on_shuffled(resolution):
    ev = ShapesEvaluator(resolution)
    ds = make(resolution=resolution, split="eval", size=300, seed=11)
    images, caps = batch(ds, 300)
    real = ev.score(images, caps)
    assert real["exact"] >= 0.98, real
    assert real["n"] == 300 and {"colour", "shape", "size", "position", "relation",
                                  "count"} <= set(real)
    attrs_score = ev.score(images, [ds.attributes(i) for i in range(300)])
    assert attrs_score["exact"] >= 0.98
    shuffled = caps[:]
    random.Random(0).shuffle(shuffled)
    floor = ev.score(images, shuffled)
    assert floor["exact"] <= 0.1 and floor["colour"] <= 0.4 and floor["shape"] <= 0.4, floor
    noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert ev.score(noisy[:150], caps[:150])["exact"] >= 0.95


@pytest.mark.parametrize("split", ["heldout", "swapped"])
def test_evaluator_reads_heldout_and_swapped_scenes(split):
    ev = ShapesEvaluator(16)
    ds = make(resolution=16, split=split, size=100, seed=4)
    images, caps = batch(ds, 100)
    assert ev.score(images, caps)["exact"] >= 0.98


def test_swapped_captions_do_not_match_their_twin_images():
    ev = ShapesEvaluator(32)
    ds = make(split="swapped", size=60, seed=9)
    images, caps = batch(ds, 60)
    crossed = [caps[i + 1] if i % 2 == 0 else caps[i - 1] for i in range(60)]
    result = ev.score(images, crossed)
    assert result["exact"] == 0.0 and result["count"] == 1.0


def test_read_returns_the_scene_and_blank_images_have_no_objects():
    ev = ShapesEvaluator(64)
    scene = {"colour": "yellow", "shape": "triangle", "size": "large", "row": 0, "col": 2,
             "position": "top right", "relation": "above",
             "second": {"colour": "purple", "shape": "cross", "size": "small", "row": 1,
                        "col": 2, "position": "middle right"}}
    got = ev.read(S.render(scene, 64))
    assert len(got["objects"]) == 2
    assert {k: got[k] for k in ("colour", "shape", "size", "position", "relation")} == {
        "colour": "yellow", "shape": "triangle", "size": "large", "position": "top right",
        "relation": "above"}
    assert got["second"]["shape"] == "cross" and got["second"]["size"] == "small"
    assert ev.read(-torch.ones(3, 64, 64)) == {"objects": []}
    blank = ev.score(-torch.ones(1, 3, 64, 64), ["a red circle in the middle"])
    assert blank["exact"] == 0.0 and blank["colour"] == 0.0


def test_evaluator_tolerates_a_one_pixel_shift():
    ev = ShapesEvaluator(64)
    ds = make(resolution=64, split="eval", size=100, seed=1, two_objects=0.0)
    images, caps = batch(ds, 100)
    shifted = torch.roll(images, shifts=(1, -1), dims=(2, 3))
    assert ev.score(shifted, caps)["exact"] >= 0.95


def test_evaluator_rejects_bad_input():
    with pytest.raises(BadConfig):
        ShapesEvaluator(20)
    ev = ShapesEvaluator(16)
    with pytest.raises(ValueError):
        ev.read(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError):
        ev.score(torch.zeros(2, 3, 16, 16), ["a red circle in the middle"])


def test_rendering_is_fast():
    ds = make(size=1000)
    start = time.perf_counter()
    for i in range(1000):
        ds[i]
    # about 15,000 images/s on one core; a loose bound for a loaded machine
    assert time.perf_counter() - start < 2.0


def test_items_batch_with_a_data_loader():
    from gaf.plugins.images.common import collate

    ds = make(size=10, resolution=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    first = next(iter(loader))
    assert first["image"].shape == (4, 3, 16, 16) and first["label"].dtype == torch.int64
    assert first["caption"] == ds.captions()[:4]
    assert first["attributes"] == [ds.attributes(i) for i in range(4)]
