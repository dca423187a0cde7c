"""The procedural textures: deterministic per seed and index, in range, and each one the
pattern its formula says."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig
from gaf.plugins.style.textures import TEXTURES, TexturesDataset, texture


@given(st.sampled_from(TEXTURES), st.integers(4, 40), st.integers(0, 2**32), st.integers(0, 50))
def test_textures_are_deterministic_and_in_range(name, size, seed, index):
    a = texture(name, size, seed, index)
    assert a.shape == (3, size, size) and a.dtype == torch.float32
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, texture(name, size, seed, index))


def test_seeds_and_indices_give_different_textures():
    for name in TEXTURES:
        base = texture(name, 32, 0, 0)
        assert not torch.equal(base, texture(name, 32, 1, 0))
        assert not torch.equal(base, texture(name, 32, 0, 1))


def colours(image: torch.Tensor) -> int:
    return len(torch.unique(image.reshape(3, -1).T, dim=0))


def test_each_pattern_is_what_its_formula_says():
    for seed in range(5):
        # stripes, checks and dots are two flat colours; waves and noise blend them
        assert colours(texture("stripes", 32, seed)) == 2
        assert colours(texture("checks", 32, seed)) == 2
        assert colours(texture("dots", 32, seed)) == 2
        assert colours(texture("waves", 32, seed)) > 10
        assert colours(texture("noise", 32, seed)) > 10
        # dots: the background colour covers most of the image
        dots = texture("dots", 32, seed).reshape(3, -1).T
        _, counts = torch.unique(dots, dim=0, return_counts=True)
        assert counts.max() > 0.55 * dots.shape[0]
        # checks: half of each colour, up to the cells cut by the border
        checks = texture("checks", 64, seed).reshape(3, -1).T
        _, counts = torch.unique(checks, dim=0, return_counts=True)
        assert abs(int(counts[0]) - int(counts[1])) < 0.3 * checks.shape[0]


def test_the_dataset_cycles_through_the_textures():
    ds = gaf.create("dataset", "textures", size=7, resolution=16, seed=3)
    assert isinstance(ds, TexturesDataset) and len(ds) == 7 and ds.num_classes == len(TEXTURES)
    items = [ds[i] for i in range(7)]
    assert [it["label"] for it in items] == [0, 1, 2, 3, 4, 0, 1]
    assert all(it["caption"].endswith(TEXTURES[it["label"]]) for it in items)
    assert torch.equal(items[2]["image"], texture("dots", 16, 3, 2))
    # an item depends on (seed, index), not on the dataset's size
    bigger = gaf.create("dataset", "textures", size=70, resolution=16, seed=3)
    assert torch.equal(bigger[4]["image"], items[4]["image"])
    assert torch.equal(ds[-1]["image"], items[6]["image"])
    with pytest.raises(IndexError):
        ds[7]
    only = gaf.create("dataset", "textures", textures=["waves"], size=2, resolution=8)
    assert {only[i]["label"] for i in range(2)} == {TEXTURES.index("waves")}


def test_unknown_texture_names_close_matches():
    with pytest.raises(BadConfig, match="did you mean 'stripes'"):
        gaf.create("dataset", "textures", textures=["stripe"])
    with pytest.raises(BadConfig, match="at least one"):
        gaf.create("dataset", "textures", textures=[])
    with pytest.raises(BadConfig):
        texture("plaid")
