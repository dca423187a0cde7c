"""gaf.plugins.clip.score: CLIPScore's closed form and reranking's order."""

from __future__ import annotations

import math

import pytest
import torch

from gaf.plugins.clip.score import CLIPSCORE_WEIGHT, clip_score, rerank


class _Fixed:
    """Images are their own features; every caption maps to one fixed direction."""

    def __init__(self, text_vec):
        self.text_vec = torch.as_tensor(text_vec, dtype=torch.float32)

    def encode_image(self, images):
        return images.flatten(1)

    def encode_text(self, captions):
        return self.text_vec.expand(len(captions), -1) * torch.arange(1, len(captions) + 1)[:, None]


def test_clip_score_is_2_5_times_the_clipped_cosine():
    model = _Fixed([1.0, 0.0])
    angles = torch.tensor([0.0, math.pi / 3, math.pi / 2, 2.5])
    images = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 3.0
    got = clip_score(model, images, ["a"] * 4, batch_size=3)
    want = [CLIPSCORE_WEIGHT * max(math.cos(a), 0.0) for a in angles.tolist()]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert CLIPSCORE_WEIGHT == 2.5
    with pytest.raises(ValueError, match="3 images for 2 captions"):
        clip_score(model, images[:3], ["a", "b"])


def test_rerank_keeps_the_k_most_similar_best_first():
    model = _Fixed([0.0, 1.0])
    candidates = torch.tensor([[1.0, 0.1], [0.0, 2.0], [1.0, 1.0], [1.0, -1.0], [0.0, 5.0]])
    idx, cos = rerank(model, candidates, "x", 3)
    assert idx.tolist() == [1, 4, 2]  # ties (1 and 4, both cosine 1) keep index order
    assert cos.tolist() == pytest.approx([1.0, 1.0, 1 / math.sqrt(2)])
    with pytest.raises(ValueError, match="k must be in 1..5"):
        rerank(model, candidates, "x", 6)
