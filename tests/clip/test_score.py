"""gaf.plugins.clip.score: CLIPScore's closed form and reranking's order."""

from __future__ import annotations

import math

import pytest
import torch

from gaf.plugins.clip.score import CLIPSCORE_WEIGHT, best_of, clip_score, rerank


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


class _SeedPipe:
    """Draws image ``(x, y)`` from each generator: the candidates depend only on seeds."""

    def __call__(self, captions, generators, **options):
        assert options == {"steps": 3}
        return torch.stack([torch.randn(2, generator=g) for g in generators])


def test_best_of_keeps_the_k_best_of_n_seeded_candidates():
    model = _Fixed([0.0, 1.0])
    got = best_of(_SeedPipe(), model, ["a", "b"], n=4, k=2, seed=10, steps=3)
    assert got.shape == (2, 2, 2)
    for i in range(2):
        cands = torch.stack([torch.randn(2, generator=torch.Generator().manual_seed(10 + 4 * i + j))
                             for j in range(4)])
        cos = cands[:, 1] / cands.norm(dim=1)
        want = cands[torch.sort(cos, descending=True, stable=True).indices[:2]]
        assert torch.equal(got[i], want)
    with pytest.raises(ValueError, match="k must be in 1..n"):
        best_of(_SeedPipe(), model, ["a"], n=2, k=3)
