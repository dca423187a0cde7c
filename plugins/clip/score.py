"""CLIPScore and CLIP reranking with a trained :class:`~.towers.CLIPModel`.

* :func:`clip_score`: Hessel et al. (2021)'s reference-free CLIPScore of each (image,
  caption) pair, ``w · max(cos(E_I(image), E_T(caption)), 0)`` with ``w = 2.5``. The
  CLIP here is trained in the project (no pretrained weights can be downloaded), so
  its values are not comparable with the published CLIP ViT-B/32 scores, only with
  each other under the same evaluation CLIP.
* ``clip-score`` (:class:`ClipScore`, kind ``metric``): the mean CLIPScore of images
  against their captions under the CLIP named by its ``clip`` option, with its standard
  error: ``metric(images, captions) -> {"clip_score", "clip_score_se"}``.
* :func:`rerank`: DALL-E's reranking: of ``N`` candidate images for one caption keep
  the ``k`` with the highest cosine similarity to it, best first; :func:`best_of`
  samples the ``N`` candidates from a pipeline and reranks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.config import option

__all__ = ["CLIPSCORE_WEIGHT", "clip_score", "rerank", "best_of", "ClipScore", "ClipScoreConfig"]

#: Hessel et al.'s rescaling weight w
CLIPSCORE_WEIGHT = 2.5


@torch.no_grad()
def clip_score(model: Any, images: Tensor, captions: Sequence[str], *,
               weight: float = CLIPSCORE_WEIGHT, batch_size: int = 250) -> Tensor:
    """``(N,)`` CLIPScores of image ``i`` with caption ``i``."""
    if len(images) != len(captions):
        raise ValueError(f"clip_score: {len(images)} images for {len(captions)} captions")
    scores = []
    for s in range(0, len(captions), batch_size):
        img = F.normalize(model.encode_image(images[s:s + batch_size]), dim=-1)
        txt = F.normalize(model.encode_text(list(captions[s:s + batch_size])), dim=-1)
        scores.append(weight * (img * txt).sum(dim=-1).clamp_min(0.0))
    return torch.cat(scores) if scores else torch.zeros(0)


@torch.no_grad()
def rerank(model: Any, candidates: Tensor, caption: str, k: int) -> tuple[Tensor, Tensor]:
    """``(indices, cosines)`` of the ``k`` candidates most similar to ``caption``, best
    first (ties keep the lower index)."""
    n = len(candidates)
    if not 1 <= k <= n:
        raise ValueError(f"rerank: k must be in 1..{n} (the number of candidates), got {k}")
    img = F.normalize(model.encode_image(candidates), dim=-1)
    txt = F.normalize(model.encode_text([caption]), dim=-1)[0]
    cos = img @ txt
    order = torch.sort(cos, descending=True, stable=True).indices[:k]
    return order, cos[order]


@torch.no_grad()
def best_of(pipe: Any, model: Any, captions: Sequence[str], n: int, k: int = 1, *,
            seed: int = 0, **options: Any) -> Tensor:
    """DALL-E's sample-then-rerank: ``n`` candidates per caption from ``pipe`` (caption
    ``i``'s candidate ``j`` drawn with a generator seeded ``seed + i * n + j``, whatever
    the batching), the ``k`` most similar to the caption under ``model`` kept, best
    first: ``(len(captions), k, C, H, W)``. ``options`` go to the pipeline. ``model``
    is a *generation* CLIP: the evaluation CLIP must never rerank what it scores."""
    if not 1 <= k <= n:
        raise ValueError(f"best_of: k must be in 1..n ({n}), got {k}")
    out = []
    for i, caption in enumerate(captions):
        gens = [torch.Generator().manual_seed(seed + i * n + j) for j in range(n)]
        candidates = pipe([caption] * n, generators=gens, **options)
        order, _ = rerank(model, candidates, caption, k)
        out.append(candidates[order])
    return torch.stack(out)


@attrs.define
class ClipScoreConfig:
    """Options of the ``clip-score`` metric."""

    clip: str = option("", "a trained clip run directory (or a saved clip encoder)")
    weight: float = option(CLIPSCORE_WEIGHT, "the rescaling weight w of w * max(cos, 0)", gt=0)


class ClipScore:
    """``clip_score(images, captions) -> {"clip_score", "clip_score_se"}``: the mean
    CLIPScore of image ``i`` with caption ``i`` and its standard error (sample standard
    deviation / √N). Images ``(N, C, H, W)`` in ``[-1, 1]`` at the CLIP's resolution."""

    Config = ClipScoreConfig

    def __init__(self, config: ClipScoreConfig | None = None):
        from .frozen import load_clip

        self.config = config or ClipScoreConfig()
        self.model = load_clip(self.config.clip, who="metric clip-score")

    def per_image(self, images: Tensor, captions: Sequence[str]) -> Tensor:
        """``(N,)`` CLIPScores."""
        return clip_score(self.model, images, captions, weight=self.config.weight)

    def __call__(self, images: Tensor, captions: Sequence[str]) -> dict[str, float]:
        scores = self.per_image(images, captions).double()
        n = len(scores)
        se = float(scores.std(unbiased=True) / n ** 0.5) if n > 1 else float("nan")
        return {"clip_score": float(scores.mean()), "clip_score_se": se}
