"""The image-to-image masks: every kind is binary, neither empty nor full, reproducible
from its generator, and has the geometry its docstring states; user masks are checked."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadConfig, BadData
from gaf.plugins.t2i.image_to_image.masks import (GRID, MASK_KINDS, check_masks, draw_mask,
                                                  draw_masks, object_box,
                                                  segment_distance)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(MASK_KINDS), h=st.integers(8, 40), w=st.integers(8, 40),
       seed=st.integers(0, 2**31 - 1))
def test_every_kind_is_binary_and_neither_empty_nor_full(kind, h, w, seed):
    m = draw_mask(kind, (h, w), torch.Generator().manual_seed(seed))
    assert m.shape == (1, h, w) and m.dtype == torch.float32
    assert bool(((m == 0) | (m == 1)).all())
    assert 0 < float(m.sum()) < h * w
    again = draw_mask(kind, (h, w), torch.Generator().manual_seed(seed))
    assert torch.equal(m, again)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), seed=st.integers(0, 2**31 - 1))
def test_box_sides_are_a_quarter_to_a_half_of_the_image(h, w, seed):
    m = draw_mask("box", (h, w), torch.Generator().manual_seed(seed))[0]
    rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
    bh, bw = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert math.ceil(h / 4) <= bh <= max(1, h // 2) and math.ceil(w / 4) <= bw <= max(1, w // 2)
    assert float(m.sum()) == bh * bw  # one solid rectangle


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["half", "quarter"]), side=st.sampled_from([16, 32, 20]),
       seed=st.integers(0, 2**31 - 1))
def test_uncropping_masks_are_one_side_strip_of_the_stated_width(kind, side, seed):
    m = draw_mask(kind, (side, side), torch.Generator().manual_seed(seed))[0]
    k = round(side * (0.5 if kind == "half" else 0.25))
    assert float(m.sum()) == k * side
    strips = [m[:, :k], m[:, side - k:], m[:k, :], m[side - k:, :]]
    assert any(bool(s.all()) for s in strips)


def test_grid_masks_are_unions_of_whole_cells():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = draw_mask("grid", (32, 32), gen)[0]
        cells = m.view(GRID, 32 // GRID, GRID, 32 // GRID)
        per_cell = cells.sum((1, 3))
        assert bool(((per_cell == 0) | (per_cell == (32 // GRID) ** 2)).all())


@settings(max_examples=50, deadline=None)
@given(ay=st.floats(-5, 5), ax=st.floats(-5, 5), by=st.floats(-5, 5), bx=st.floats(-5, 5),
       py=st.floats(-5, 5), px=st.floats(-5, 5))
def test_segment_distance_is_the_float64_closed_form(ay, ax, by, bx, py, px):
    got = float(segment_distance(torch.tensor([py], dtype=torch.float64),
                                 torch.tensor([px], dtype=torch.float64), (ay, ax), (by, bx)))
    # brute force over the segment
    best = min(math.hypot(py - (ay + s * (by - ay)), px - (ax + s * (bx - ax)))
               for s in [i / 4000 for i in range(4001)])
    assert got <= best + 1e-9 and got >= best - 0.01 * max(1.0, math.hypot(by - ay, bx - ax))


def test_draw_masks_mixes_the_kinds_and_is_reproducible():
    a = draw_masks(("half", "stroke"), 40, (16, 16), torch.Generator().manual_seed(1))
    b = draw_masks(("half", "stroke"), 40, (16, 16), torch.Generator().manual_seed(1))
    assert a.shape == (40, 1, 16, 16) and torch.equal(a, b)
    halves = sum(float(m.sum()) == 128 and (bool(m[0, :, :8].all()) or bool(m[0, :, 8:].all())
                                           or bool(m[0, :8].all()) or bool(m[0, 8:].all()))
                 for m in a)
    assert 5 < halves < 35  # both kinds occur
    with pytest.raises(BadConfig, match="unknown mask kind 'hlaf'.*half"):
        draw_mask("hlaf", (8, 8), torch.Generator())


def test_object_box_covers_the_first_objects_cell():
    m = object_box({"row": 0, "col": 2}, (32, 32), margin=1)[0]
    assert bool(m[0:12, 20:32].all()) and float(m.sum()) == 12 * 12
    centre = m[5, 26]
    assert centre == 1 and m[20, 5] == 0


def test_cell_masks_are_the_object_box_of_a_uniform_cell():
    gen = torch.Generator().manual_seed(0)
    boxes = {(r, c): object_box({"row": r, "col": c}, (32, 32)) for r in range(3)
             for c in range(3)}
    seen = set()
    for _ in range(200):
        m = draw_mask("cell", (32, 32), gen)
        hits = [rc for rc, box in boxes.items() if torch.equal(m, box)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == set(boxes)  # every cell occurs (each with probability 1/9 a draw)


def test_check_masks_refuses_non_binary_empty_full_and_misshapen_masks():
    images = torch.zeros(2, 3, 8, 8)
    good = torch.zeros(2, 1, 8, 8)
    good[:, :, :4] = 1
    assert torch.equal(check_masks(good, images), good)
    jpeg = good.clone()
    jpeg[1, 0, 0, 0] = 0.98
    with pytest.raises(BadData, match="image 1's mask is not binary"):
        check_masks(jpeg, images)
    empty = good.clone()
    empty[0] = 0
    with pytest.raises(BadData, match="image 0's mask is empty"):
        check_masks(empty, images)
    full = good.clone()
    full[1] = 1
    with pytest.raises(BadData, match="image 1's mask is full"):
        check_masks(full, images)
    with pytest.raises(BadData, match=r"expected masks of shape \(2, 1, 8, 8\)"):
        check_masks(torch.zeros(2, 1, 4, 4), images)
