"""gaf.plugins.clip.loss: the symmetric InfoNCE loss against a float64 loop reference,
its symmetries, the temperature clamp and duplicate captions as positives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaf.plugins.clip.loss import (INIT_LOG_SCALE, MAX_LOG_SCALE, clamp_log_scale_,
                                   clip_logits, clip_loss, duplicate_mask)


def reference(image, text, log_scale, groups=None):
    """The loss written out in float64 loops: ½ (mean over images of the cross-entropy
    against the uniform distribution on the texts of the same caption group, plus the
    same over texts)."""
    image, text = np.asarray(image, dtype=np.float64), np.asarray(text, dtype=np.float64)
    n = len(image)
    groups = list(range(n)) if groups is None else list(groups)
    scale = math.exp(min(log_scale, math.log(100.0)))
    unit_i = [v / math.sqrt(sum(x * x for x in v)) for v in image]
    unit_t = [v / math.sqrt(sum(x * x for x in v)) for v in text]
    logits = [[scale * sum(a * b for a, b in zip(unit_i[i], unit_t[j])) for j in range(n)]
              for i in range(n)]

    def ce(row, k):
        top = max(row)
        log_z = top + math.log(sum(math.exp(x - top) for x in row))
        same = [j for j in range(n) if groups[j] == groups[k]]
        return -sum(row[j] - log_z for j in same) / len(same)

    rows = sum(ce(logits[i], i) for i in range(n)) / n
    cols = sum(ce([logits[i][j] for i in range(n)], j) for j in range(n)) / n
    return 0.5 * (rows + cols)


def features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize("log_scale", [INIT_LOG_SCALE, 0.3, 7.0])
@pytest.mark.parametrize("groups", [None, [0, 1, 0, 2, 1, 3], [5, 5, 5, 5, 5, 5]])
def test_matches_the_float64_reference(log_scale, groups):
    image, text = features(6, 5, seed=1)
    pos = None if groups is None else duplicate_mask(torch.tensor(groups))
    got = clip_loss(image.double(), text.double(), torch.tensor(log_scale, dtype=torch.float64),
                    pos)
    assert got.item() == pytest.approx(reference(image, text, log_scale, groups), rel=1e-12)
    got32 = clip_loss(image, text, torch.tensor(log_scale), pos)
    assert got32.item() == pytest.approx(reference(image, text, log_scale, groups), rel=1e-5)


def test_distinct_captions_are_clips_loss_and_the_mask_of_distinct_ones_changes_nothing():
    image, text = features(8, 4, seed=2)
    s = torch.tensor(INIT_LOG_SCALE)
    logits = math.exp(INIT_LOG_SCALE) * (torch.nn.functional.normalize(image, dim=1)
                                         @ torch.nn.functional.normalize(text, dim=1).T)
    target = torch.arange(8)
    clip = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))
    assert clip_loss(image, text, s).item() == pytest.approx(clip.item(), rel=1e-6)
    masked = clip_loss(image, text, s, duplicate_mask(torch.arange(8)))
    assert masked.item() == pytest.approx(clip.item(), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 7), d=st.integers(1, 6), seed=st.integers(0, 10_000),
       log_scale=st.floats(-2.0, 6.0), n_groups=st.integers(1, 7))
def test_symmetric_in_images_and_texts_and_invariant_to_the_order_of_pairs(
        n, d, seed, log_scale, n_groups):
    image, text = features(n, d, seed)
    image, text = image.double(), text.double()
    groups = torch.tensor(np.random.default_rng(seed).integers(0, n_groups, n))
    pos, s = duplicate_mask(groups), torch.tensor(log_scale, dtype=torch.float64)
    loss = clip_loss(image, text, s, pos)
    assert clip_loss(text, image, s, pos).item() == pytest.approx(loss.item(), rel=1e-12)
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(n))
    permuted = clip_loss(image[perm], text[perm], s, duplicate_mask(groups[perm]))
    assert permuted.item() == pytest.approx(loss.item(), rel=1e-12)
    # features are normalised: their lengths do not matter
    assert clip_loss(3 * image, 0.5 * text, s, pos).item() == pytest.approx(loss.item(),
                                                                            rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 7), seed=st.integers(0, 10_000))
def test_duplicate_captions_are_positives_for_each_other(n, seed):
    """Exchanging the texts of two pairs with the same caption (their text features may
    differ, e.g. under dropout) changes nothing; with plain CLIP targets it would."""
    image, text = features(n, 4, seed)
    image, text = image.double(), text.double()
    groups = torch.arange(n)
    groups[1] = 0  # pairs 0 and 1 have the same caption
    s = torch.tensor(INIT_LOG_SCALE, dtype=torch.float64)
    swapped = text.clone()
    swapped[[0, 1]] = text[[1, 0]]
    pos = duplicate_mask(groups)
    assert clip_loss(image, swapped, s, pos).item() == pytest.approx(
        clip_loss(image, text, s, pos).item(), rel=1e-12)
    assert clip_loss(image, swapped, s).item() != pytest.approx(
        clip_loss(image, text, s).item(), rel=1e-9)


def test_duplicate_mask_compares_whole_rows():
    ids = torch.tensor([[3, 4, 0], [3, 4, 0], [3, 5, 0], [3, 4, 0]])
    want = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(duplicate_mask(ids), want)


def test_the_temperature_is_clamped_at_100_and_gets_no_gradient_beyond():
    image, text = features(4, 3, seed=3)
    assert INIT_LOG_SCALE == pytest.approx(math.log(1 / 0.07))
    high = torch.tensor(8.0, requires_grad=True)  # e^8 ≈ 2981 > 100
    logits = clip_logits(image, text, high)
    cos = (torch.nn.functional.normalize(image, dim=1)
           @ torch.nn.functional.normalize(text, dim=1).T)
    assert torch.allclose(logits, 100.0 * cos, rtol=1e-6, atol=1e-4)  # logits up to 100
    clip_loss(image, text, high).backward()
    assert high.grad.item() == 0.0
    low = torch.tensor(1.0, requires_grad=True)
    clip_loss(image, text, low).backward()
    assert low.grad.item() != 0.0
    param = torch.nn.Parameter(torch.tensor(8.0))
    clamp_log_scale_(param)
    assert param.item() == pytest.approx(MAX_LOG_SCALE)
    param.data.fill_(-1.0)
    assert clamp_log_scale_(param).item() == 0.0


def test_bad_shapes_are_clear_errors():
    image, text = features(4, 3, seed=4)
    with pytest.raises(ValueError, match=r"must both be \(N, D\)"):
        clip_loss(image, text[:3], torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"positives must be \(4, 4\)"):
        clip_loss(image, text, torch.tensor(1.0), torch.ones(3, 3, dtype=torch.bool))
