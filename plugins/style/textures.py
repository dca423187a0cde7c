"""``textures``: procedural textures, the style images of style transfer.

A map-style image dataset (kind ``dataset``): ``ds[i]`` is
``{"image" (3, R, R) in [-1, 1], "caption", "label"}``. Item ``i`` is texture
``textures[i % len(textures)]``, its parameters (period, angle, phase, radius, colours)
drawn from the seed's named stream ``"texture"`` at key ``i`` (:mod:`gaf.seeding`): the
same seed and index give the same pixels, whatever ``size``. ``caption`` is e.g.
``"orange and blue stripes"``, ``label`` the texture's index in :data:`TEXTURES`.

The textures, with ``u`` the pixel coordinate along a random direction θ and ``v``
across it (pixel centres, in pixels), ``p`` a period in ``[R/8, R/4]`` and two colours
``c1``, ``c2`` (random hues at least a quarter turn apart, saturation in [0.6, 1],
value in [0.6, 1]):

* ``stripes``: ``c1`` where ``frac(u/p) < ½``, else ``c2``;
* ``checks``: ``c1`` where ``⌊u/p⌋ + ⌊v/p⌋`` is even, else ``c2``;
* ``dots``: discs of ``c1``, radius ``0.2p``–``0.35p``, on a square lattice of period
  ``p`` over a ``c2`` background;
* ``waves``: ``c1 + (c2 − c1)·(½ + ½ sin(2π u/p + a sin(2π v/q)))``, smooth bands bent
  by a second sinusoid (amplitude ``a`` in [1, 3] rad, period ``q`` in ``[R/4, R/2]``);
* ``noise``: the two colours mixed by Gaussian noise drawn at a quarter of the size and
  upsampled bilinearly (blobs a few pixels wide), squashed through a logistic.

Pixels are colours in [0, 1] mapped to [-1, 1]. :func:`texture` gives one image
without a dataset; ``gaf stylize --texture NAME`` takes one as its style (item 0 of
``textures=[NAME]`` with ``--seed`` as the seed), ``--save-style`` writes it.

Public API: :data:`TEXTURES`, :func:`texture`, :class:`TexturesDataset` (``Config``).
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from gaf.config import option, option_error
from gaf.errors import did_you_mean
from gaf.seeding import rng

__all__ = ["TEXTURES", "texture", "TexturesDataset", "TexturesConfig"]

TEXTURES = ("stripes", "checks", "dots", "waves", "noise")
_HUE_NAMES = ((0.04, "red"), (0.10, "orange"), (0.18, "yellow"), (0.45, "green"),
              (0.55, "cyan"), (0.72, "blue"), (0.85, "purple"), (0.96, "pink"), (1.01, "red"))


def _hue_name(h: float) -> str:
    return next(name for edge, name in _HUE_NAMES if h < edge)


def _colours(g: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, str]:
    h1 = g.uniform()
    h2 = (h1 + g.uniform(0.25, 0.75)) % 1.0
    out = []
    for h in (h1, h2):
        s, v = g.uniform(0.6, 1.0), g.uniform(0.6, 1.0)
        out.append(np.array(colorsys.hsv_to_rgb(h, s, v)))
    return out[0], out[1], _hue_name(h1), _hue_name(h2)


def _frame(size: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """(u, v) coordinates along and across a random direction, and a period."""
    theta = g.uniform(0, math.pi)
    period = g.uniform(size / 8, size / 4)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    u = x * math.cos(theta) + y * math.sin(theta) + g.uniform(0, period)
    v = -x * math.sin(theta) + y * math.cos(theta) + g.uniform(0, period)
    return u, v, period


def _mix(name: str, size: int, g: np.random.Generator) -> np.ndarray:
    """The weight of colour 2 at each pixel, ``(size, size)`` in [0, 1]."""
    u, v, p = _frame(size, g)
    if name == "stripes":
        return (np.mod(u / p, 1.0) >= 0.5).astype(np.float64)
    if name == "checks":
        return (np.mod(np.floor(u / p) + np.floor(v / p), 2) == 1).astype(np.float64)
    if name == "dots":
        radius = g.uniform(0.2, 0.35) * p
        du = np.mod(u, p) - p / 2
        dv = np.mod(v, p) - p / 2
        return (np.hypot(du, dv) > radius).astype(np.float64)
    if name == "waves":
        amplitude, q = g.uniform(1.0, 3.0), g.uniform(size / 4, size / 2)
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / p + amplitude * np.sin(2 * math.pi * v / q))
    if name == "noise":
        low = max(2, size // 4)
        z = torch.from_numpy(g.standard_normal((1, 1, low, low)))
        up = torch.nn.functional.interpolate(z, size=(size, size), mode="bilinear",
                                             align_corners=False)[0, 0].numpy()
        up = up / max(float(up.std()), 1e-8)
        return 1.0 / (1.0 + np.exp(-2.0 * up))
    raise ValueError(name)


def texture(name: str, size: int = 32, seed: int = 0, index: int = 0) -> Tensor:
    """Texture ``name`` as a ``(3, size, size)`` float32 image in ``[-1, 1]``, drawn
    from the seed's stream ``"texture"`` at key ``index``."""
    return _draw(name, size, seed, index)[0]


def _check_name(option_name: str, name: Any) -> None:
    if name not in TEXTURES:
        hint = did_you_mean(str(name), TEXTURES).removeprefix("; ")
        raise option_error(option_name, f"must be among {', '.join(TEXTURES)}"
                           + (f" ({hint})" if hint else ""), name)


def _draw(name: str, size: int, seed: int, index: int) -> tuple[Tensor, str]:
    _check_name("texture", name)
    g = rng(seed, "texture", index)
    c1, c2, n1, n2 = _colours(g)
    w = _mix(name, size, g)[None]
    rgb = c1[:, None, None] * (1 - w) + c2[:, None, None] * w
    image = torch.from_numpy(rgb * 2.0 - 1.0).float().clamp_(-1.0, 1.0)
    return image, f"{n1} and {n2} {name}"


def _names(inst: Any, attribute: Any, value: Any) -> None:
    if not value:
        raise option_error(attribute.name, "must name at least one texture", value)
    for name in value:
        _check_name(attribute.name, name)


@attrs.define
class TexturesConfig:
    """Options of the ``textures`` dataset."""

    textures: tuple[str, ...] = option(TEXTURES, "which textures, in turn",
                                       validator=_names)
    resolution: int = option(32, "image side in pixels", ge=4, le=4096)
    size: int = option(100, "number of items", ge=1)
    seed: int = option(0, "seed of the textures' parameters", ge=0)


class TexturesDataset:
    """Procedural textures (stripes, checks, dots, waves, noise), deterministic per seed.

    ``ds[i]`` → ``{"image" (3, R, R) in [-1, 1], "caption", "label"}``; see the module
    docstring for each texture's formula.
    """

    Config = TexturesConfig
    channels = 3

    def __init__(self, config: TexturesConfig | None = None):
        self.config = config or TexturesConfig()
        self.resolution = self.config.resolution
        self.num_classes = len(TEXTURES)
        self.class_names = list(TEXTURES)

    def __len__(self) -> int:
        return self.config.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"textures: index {index} out of range for {n} items")
        index %= n
        c = self.config
        name = c.textures[index % len(c.textures)]
        image, caption = _draw(name, c.resolution, c.seed, index)
        return {"image": image, "caption": caption, "label": TEXTURES.index(name)}
