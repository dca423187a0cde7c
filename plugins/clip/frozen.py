"""A trained CLIP, frozen, as the parts other systems build on.

* ``clip-text`` (:class:`ClipText`, kind ``conditioner``): the text tower of a trained
  CLIP. ``__call__(captions)`` gives its per-token states ``(B, max_length,
  text_width)`` (the cross-attention context, like the ``text-transformer``'s), and
  :meth:`ClipText.pooled` the caption's CLIP text embedding ``(B, embed_dim)``, the
  vector that DALL-E 2's prior and decoder and Imagen's time embedding take.
  ``trainable`` is False: an objective never trains it (the LDM leaves it out of its
  optimiser and rebuilds it from its options when the run is sampled).
  ``null(batch_size)`` is the encoding of the empty caption ``""``, the unconditional
  context Stable Diffusion uses with its frozen CLIP text encoder: a frozen tower has no
  learned null.
* ``clip-image`` (:class:`ClipImage`, kind ``encoder``): the image tower.
  ``__call__(images)`` gives the CLIP image embedding ``(B, embed_dim)`` of images in
  ``[-1, 1]``, L2-normalised unless ``normalize=false`` (DALL-E 2 works with unit
  embeddings).

Both take the option ``clip``: a run directory of ``gaf run --objective clip`` (its
``encoder/`` holds the model) or a directory written by ``gaf.save`` of a ``clip``
encoder. The path is made absolute, so a pipeline that records it can be sampled from
any working directory. Loading reads safetensors and JSON only (:func:`gaf.load`).
Every parameter has ``requires_grad = False`` and the modules stay in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf.config import option
from gaf.errors import BadConfig, BadData

from .towers import CLIPModel

__all__ = ["load_clip", "ClipText", "ClipTextConfig", "ClipImage", "ClipImageConfig"]

_HOW = ("a trained CLIP: --set {kind}.clip=RUN_DIR, the directory of a "
        "`gaf run --objective clip` run (or of gaf.save of a clip encoder)")


def load_clip(path: str | Path, *, who: str = "clip") -> CLIPModel:
    """The :class:`CLIPModel` saved in ``path`` (a clip run directory or a saved
    encoder), frozen: eval mode, no parameter requires a gradient."""
    from gaf.components import load_from
    from gaf.registry import REGISTRY

    if not str(path):
        raise BadConfig(f"{who} needs " + _HOW.format(kind=who.split()[0]))
    p = Path(path)
    if not p.exists():
        raise BadConfig(f"{who}: {str(path)!r} does not exist; it needs "
                        + _HOW.format(kind=who.split()[0]))
    model = load_from(REGISTRY, "encoder", p)
    if not isinstance(model, CLIPModel):
        raise BadConfig(f"{who}: {str(path)!r} holds a {type(model).__name__}, not a clip "
                        "encoder")
    model.requires_grad_(False)
    return model.eval()


class _FrozenClip(nn.Module):
    """A trained CLIP held frozen: its ``config.clip`` path made absolute and loaded, and
    eval mode kept whatever ``train()`` asks."""

    def __init__(self, config: Any, who: str):
        super().__init__()
        self.config = (attrs.evolve(config, clip=str(Path(config.clip).resolve()))
                       if config.clip else config)
        self.clip = load_clip(self.config.clip, who=who)

    def train(self, mode: bool = True) -> _FrozenClip:
        """Stays in eval mode: the tower is frozen."""
        return super().train(False)


@attrs.define
class ClipTextConfig:
    """Options of the ``clip-text`` conditioner."""

    clip: str = option("", "a trained clip run directory (or a saved clip encoder)")


class ClipText(_FrozenClip):
    """Captions → the frozen CLIP text tower's states (see the module docstring)."""

    Config = ClipTextConfig
    condition_key = "caption"
    trainable = False

    def __init__(self, config: ClipTextConfig | None = None):
        super().__init__(config or ClipTextConfig(), "conditioner clip-text")
        cfg = self.clip.config
        self.tokens, self.width, self.embed_dim = cfg.max_length, cfg.text_width, cfg.embed_dim
        self._empty: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(states (B, max_length, text_width), pooled (B, embed_dim))``, the pooled
        vector being the (unnormalised) CLIP text embedding."""
        return self.clip.text(list(captions))

    def forward(self, captions: Sequence[str]) -> Tensor:
        """``(B, max_length, text_width)`` per-token states."""
        return self.encode(captions)[0]

    @torch.no_grad()
    def pooled(self, captions: Sequence[str], normalize: bool = True) -> Tensor:
        """``(B, embed_dim)`` CLIP text embeddings, L2-normalised by default (the
        vector of :meth:`encode`, computed without the pads' states)."""
        vec = self.clip.encode_text(list(captions))
        return F.normalize(vec, dim=-1) if normalize else vec

    @torch.no_grad()
    def text_condition(self, captions: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """``(states (B, max_length, text_width), mask (B, max_length), pooled (B,
        embed_dim))``: the per-token states with the real-token mask (pads False) and the
        unit CLIP text embedding, what the unCLIP prior reads."""
        ids, mask = self.clip.tokenize(list(captions))
        states, pooled = self.clip.text_ids(ids, mask)
        return states, mask.bool(), F.normalize(pooled, dim=-1)

    def used_parameters(self) -> list[nn.Parameter]:
        """The parameters this conditioner runs: the text tower and its projection (the
        image tower is loaded with the CLIP but never called)."""
        return [*self.clip.text_encoder.parameters(), *self.clip.text_proj.parameters()]

    def _empty_caption(self) -> tuple[Tensor, Tensor]:
        """The empty caption's ``(states, pooled)``, encoded once (the tower is frozen;
        again only after the module moved to another device)."""
        device = self.clip.log_scale.device
        if self._empty is None or self._empty[0].device != device:
            self._empty = self.encode([""])
        return self._empty

    def null(self, batch_size: int) -> Tensor:
        """The empty caption's states, ``(batch_size, max_length, text_width)``."""
        return self._empty_caption()[0].expand(batch_size, -1, -1)

    def null_pooled(self, batch_size: int, normalize: bool = True) -> Tensor:
        """The empty caption's CLIP text embedding, ``(batch_size, embed_dim)``."""
        vec = self._empty_caption()[1]
        return (F.normalize(vec, dim=-1) if normalize else vec).expand(batch_size, -1)


@attrs.define
class ClipImageConfig:
    """Options of the ``clip-image`` encoder."""

    clip: str = option("", "a trained clip run directory (or a saved clip encoder)")
    normalize: bool = option(True, "L2-normalise the embeddings")


class ClipImage(_FrozenClip):
    """Images in ``[-1, 1]`` → frozen CLIP image embeddings (see the module docstring)."""

    Config = ClipImageConfig

    def __init__(self, config: ClipImageConfig | None = None):
        super().__init__(config or ClipImageConfig(), "encoder clip-image")
        cfg = self.clip.config
        self.embed_dim, self.resolution, self.in_channels = (cfg.embed_dim, cfg.resolution,
                                                             cfg.in_channels)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``(B, embed_dim)`` embeddings of ``(B, in_channels, resolution, resolution)``
        images."""
        want = (self.in_channels, self.resolution, self.resolution)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise BadData(f"clip-image: expected images (B, {want[0]}, {want[1]}, {want[2]}), "
                          f"got {tuple(images.shape)}")
        vec = self.clip.encode_image(images)
        return F.normalize(vec, dim=-1) if self.config.normalize else vec
