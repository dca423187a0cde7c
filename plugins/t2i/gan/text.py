"""The caption embedding the GAN's two players take: :func:`caption_embedder`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from torch import Tensor

from gaf.errors import BadConfig

__all__ = ["CaptionEmbedder", "caption_embedder"]


@attrs.frozen
class CaptionEmbedder:
    """``__call__(captions) -> (B, dim)``: one vector per caption."""

    dim: int
    encode: Callable[[Sequence[str]], Tensor]

    def __call__(self, captions: Sequence[str]) -> Tensor:
        return self.encode(list(captions))


def caption_embedder(conditioner: Any) -> CaptionEmbedder:
    """The vector a conditioner gives a caption:

    * a frozen CLIP text tower (``clip-text``): its ``pooled`` embedding, unit length,
      times ``√embed_dim`` (the length of a standard normal vector of that size: each
      entry is then on the scale of the noise ``z`` it is concatenated with after the
      projection, not ``√embed_dim`` times smaller);
    * a text encoder with ``tokenize`` and ``mean_state`` (``text-transformer``, trained
      jointly): the mean of its real tokens' states.

    Any other conditioner is a :class:`~gaf.errors.BadConfig`."""
    if hasattr(conditioner, "pooled") and hasattr(conditioner, "embed_dim"):
        dim = int(conditioner.embed_dim)
        scale = math.sqrt(dim)

        def unit(captions: Sequence[str]) -> Tensor:
            return conditioner.pooled(captions) * scale
        return CaptionEmbedder(dim, unit)
    if hasattr(conditioner, "tokenize") and hasattr(conditioner, "mean_state"):
        def encode(captions: Sequence[str]) -> Tensor:
            return conditioner.mean_state(*conditioner.tokenize(captions))
        return CaptionEmbedder(int(conditioner.width), encode)
    raise BadConfig(f"the GAN needs a caption embedding: conditioner "
                    f"{getattr(conditioner, 'gaf_name', type(conditioner).__name__)!r} has "
                    f"neither pooled() (clip-text) nor mean_state() (text-transformer)")
