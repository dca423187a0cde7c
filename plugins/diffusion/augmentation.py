"""Noise-conditioning augmentation of a cascade's conditioning image (Ho et al. 2022,
Cascaded Diffusion Models; Saharia et al. 2022, Imagen).

A super-resolution stage is conditioned on a low-resolution image. In training that
image is a real one; at sampling it is the previous stage's output, with that stage's
artefacts. Corrupting the conditioning image with Gaussian noise of a random level
during training, and telling the model the level, makes the stage robust to them: at
sampling the level is a knob (swept in the evaluation), 0 = trust the low-resolution
image, 1 = ignore it.

For a level ``a`` in ``[0, 1]``, noise ``ε ~ N(0, I)`` and the conditioning image
``x``::

    ᾱ(a)  = f(a) / f(0),   f(a) = cos²(π/2 · (a + s) / (1 + s)),   s = 0.008
    aug(x) = √ᾱ(a) · x + √(1 − ᾱ(a)) · ε

the continuous-time cosine schedule (Nichol & Dhariwal 2021, the one imagen-pytorch uses
for its low-resolution noise): ``ᾱ(0) = 1`` (no noise) and ``ᾱ(1) = 0`` (pure noise),
decreasing in between. In training ``a ~ U[0, 1]`` per image; the model is given ``a``
(the UNet option ``noise_level``). DeepFloyd IF does the same with its training schedule
at a discrete ``noise_level`` (250 of 1000 by default at sampling).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["augmentation_alpha_bar", "noise_augment", "COSINE_OFFSET"]

#: the cosine schedule's offset ``s`` (Nichol & Dhariwal 2021)
COSINE_OFFSET = 0.008


def augmentation_alpha_bar(a: Tensor | float) -> Tensor:
    """``ᾱ(a)`` of the module doc for levels ``a`` in ``[0, 1]`` (float32 unless ``a`` is
    a float64 tensor); a level outside ``[0, 1]`` is a ``ValueError``."""
    a = torch.as_tensor(a, dtype=a.dtype if isinstance(a, Tensor) and a.is_floating_point()
                        else torch.float32)
    if bool(((a < 0) | (a > 1)).any()) or not bool(torch.isfinite(a).all()):
        raise ValueError(f"noise-augmentation levels must lie in [0, 1], got "
                         f"{a.min().item():g} .. {a.max().item():g}")
    s = COSINE_OFFSET
    f0 = math.cos(math.pi / 2 * s / (1 + s)) ** 2
    alpha_bar = torch.cos(math.pi / 2 * (a + s) / (1 + s)) ** 2 / f0
    return alpha_bar.clamp(0.0, 1.0)


def noise_augment(x: Tensor, level: Any, noise: Tensor) -> Tensor:
    """``√ᾱ(a) x + √(1 − ᾱ(a)) ε`` (module doc) for images ``x`` ``(B, …)``, ``level`` one
    number or a ``(B,)`` tensor of levels and ``noise`` shaped like ``x``."""
    if noise.shape != x.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must be shaped like x {tuple(x.shape)}")
    if not isinstance(level, Tensor):  # a number: computed in x's precision
        level = torch.as_tensor(level, dtype=x.dtype if x.is_floating_point()
                                else torch.float32)
    alpha_bar = augmentation_alpha_bar(level).to(device=x.device, dtype=x.dtype)
    if alpha_bar.dim() == 1:
        if alpha_bar.shape[0] != x.shape[0]:
            raise ValueError(f"{alpha_bar.shape[0]} levels for a batch of {x.shape[0]}")
        alpha_bar = alpha_bar.reshape(-1, *([1] * (x.dim() - 1)))
    elif alpha_bar.dim() > 1:
        raise ValueError(f"level must be a number or a (B,) tensor, got shape "
                         f"{tuple(alpha_bar.shape)}")
    return alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * noise
