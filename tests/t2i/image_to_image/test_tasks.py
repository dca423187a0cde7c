"""The image-to-image tasks: each source against its float64 formula, and the condition
layout ``[image ; mask]`` (C + 1 channels) every task shares."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.errors import BadConfig
from gaf.plugins.images.shapes import PALETTE
from gaf.plugins.t2i.image_to_image.masks import draw_masks
from gaf.plugins.t2i.image_to_image.tasks import (TASKS, condition, degrade, downsample,
                                                  grey, luminance, paste, source_shape)

images_st = st.integers(0, 2**31 - 1).map(
    lambda s: torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(s)) * 2 - 1)


@settings(max_examples=30, deadline=None)
@given(x=images_st)
def test_luminance_is_bt601_in_float64(x):
    want = (0.299 * x[:, 0].double() + 0.587 * x[:, 1].double() + 0.114 * x[:, 2].double())
    torch.testing.assert_close(luminance(x)[:, 0].double(), want, rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(x=images_st, levels=st.integers(2, 9))
def test_grey_levels_are_the_floor_formula_and_idempotent(x, levels):
    g = grey(x, levels)
    u = (luminance(x).double() + 1) / 2
    k = torch.clamp(torch.floor(u * levels), max=levels - 1)
    torch.testing.assert_close(g.double(), k / (levels - 1) * 2 - 1, rtol=0, atol=1e-6)
    assert torch.equal(grey(g, levels), g)
    assert len(torch.unique(g)) <= levels


def test_four_grey_levels_make_the_palette_ambiguous():
    def level(name):
        rgb = torch.tensor(PALETTE[name]).view(1, 3, 1, 1) * 2 - 1
        return float(grey(rgb, 4))
    assert level("red") == level("blue") == level("purple")
    assert level("green") == level("cyan")
    assert len({level(c) for c in ("red", "green", "yellow")}) == 3


@settings(max_examples=20, deadline=None)
@given(x=images_st, low=st.sampled_from([2, 4, 8]))
def test_super_resolution_source_is_the_block_mean(x, low):
    f = 16 // low
    want = x.double().view(3, 3, low, f, low, f).mean((3, 5))
    torch.testing.assert_close(downsample(x, low).double(), want, rtol=0, atol=1e-6)
    assert degrade("super-resolution", x, low_resolution=low).shape == (3, 3, low, low)


@pytest.mark.parametrize("task", TASKS)
def test_every_condition_is_the_image_then_the_mask(task):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    masks = draw_masks(("box",), 4, (16, 16), torch.Generator().manual_seed(1))
    src = degrade(task, x, low_resolution=4, grey_levels=4)
    assert tuple(src.shape[1:]) == source_shape(task, (3, 16, 16), low_resolution=4)
    c = condition(task, src, masks if task in ("inpainting", "uncropping") else None,
                  (3, 16, 16), grey_levels=4)
    assert c.shape == (4, 4, 16, 16)
    image, m = c[:, :3], c[:, 3:]
    if task in ("inpainting", "uncropping"):
        assert torch.equal(m, masks)
        assert torch.equal(image, x * (1 - masks))  # the hole never reaches the model
    else:
        assert bool((m == 1).all())
    if task == "colourisation":
        assert torch.equal(image, grey(x, 4).expand(4, 3, 16, 16))
    if task == "super-resolution":
        from torch.nn.functional import interpolate

        up = interpolate(src, size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)
        torch.testing.assert_close(image, up)


def test_mask_tasks_need_masks_and_unknown_tasks_are_refused():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(BadConfig, match="inpainting task needs masks"):
        condition("inpainting", x, None, (3, 8, 8))
    with pytest.raises(BadConfig, match="unknown image-to-image task 'deblur'"):
        degrade("deblur", x)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_paste_takes_the_hole_from_x_and_the_rest_from_the_known_image(seed):
    gen = torch.Generator().manual_seed(seed)
    x, known = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    m = draw_masks(("stroke", "grid"), 2, (8, 8), gen)
    out = paste(x, known, m)
    assert torch.equal(out[m.expand_as(out) == 1], x[m.expand_as(x) == 1])
    assert torch.equal(out[m.expand_as(out) == 0], known[m.expand_as(known) == 0])
