"""The image-to-image tasks: what a model is given (the *source*) and how that becomes
its input (the *condition*).

Every task follows SR3 / Palette (Saharia et al. 2021, 2022): the model denoises the
target image ``x_t`` with the condition concatenated on channels. The condition has
one layout for every task, ``C + 1`` channels for ``C``-channel images::

    condition = [ c (C channels) ; m (1 channel) ]

with the mask ``m`` (1 = generated, 0 = known; :mod:`.masks`) and ``c``:

``super-resolution``
    source: the image area-downsampled to ``low_resolution`` (each low pixel the mean
    of the block it covers; :func:`downsample`); ``c`` = the source upsampled back
    (``upsample``, bicubic by default, clamped to [-1, 1]); ``m`` = 1 everywhere;
``colourisation``
    source: the luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, on [0, 1])
    quantised to ``grey_levels`` levels (:func:`grey`): level ``k = min(⌊Y·L⌋, L − 1)``,
    shown as ``k / (L − 1)``. Quantising makes the task genuinely ambiguous: with the
    default 4 levels the ``shapes`` palette's red, blue and purple fall on one level
    and green and cyan on another, so only a caption can say which colour an object
    is. ``c`` = the grey source repeated on the ``C`` channels; ``m`` = 1 everywhere;
``inpainting`` / ``uncropping``
    source: the image and a mask; ``c`` = the image with the hole zeroed,
    ``x·(1 − m)`` (what is under the hole never reaches the model); ``m`` = the mask.

For the mask tasks the model also sees the known pixels in ``x_t`` itself, as in
Palette: its input is ``x_t·m + x·(1 − m)`` (:func:`paste`) in training and at every
sampling step, and the training loss covers the hole only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.errors import BadConfig

from .masks import full_masks

__all__ = ["TASKS", "MASK_TASKS", "DEFAULT_MASKS", "LUMA", "luminance", "grey", "downsample",
           "upsample", "degrade", "condition", "paste", "source_shape"]

TASKS = ("super-resolution", "inpainting", "uncropping", "colourisation")
#: the tasks whose model is given a mask (the others generate every pixel)
MASK_TASKS = ("inpainting", "uncropping")
#: the mask kinds a task trains on unless ``mask_kinds`` says otherwise
DEFAULT_MASKS = {"inpainting": ("box", "grid", "stroke"), "uncropping": ("half", "quarter")}
#: ITU-R BT.601 luma weights of R, G, B
LUMA = (0.299, 0.587, 0.114)


def luminance(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of ``(B, C, H, W)`` images in [-1, 1] (a 1-channel image
    is its own), in [-1, 1]."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise BadConfig(f"colourisation takes 1- or 3-channel images, got {images.shape[1]}")
    w = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)  # the weights sum to 1: [-1, 1] maps to [-1, 1]


def grey(images: Tensor, levels: int) -> Tensor:
    """The luma of ``images`` quantised to ``levels`` levels (module doc), in [-1, 1];
    ``levels = 0`` keeps it continuous. Idempotent: a quantised grey image stays as it
    is."""
    y = luminance(images)
    if levels == 0:
        return y
    if levels < 2:
        raise BadConfig(f"grey_levels must be 0 (no quantisation) or >= 2, got {levels}")
    u = ((y + 1) / 2).clamp(0, 1)
    k = torch.floor(u * levels).clamp(max=levels - 1)
    return k / (levels - 1) * 2 - 1


def downsample(images: Tensor, size: int) -> Tensor:
    """Area downsampling to ``size × size`` (block means when ``size`` divides the side)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def upsample(images: Tensor, shape: Sequence[int], mode: str = "bicubic") -> Tensor:
    """``images`` resized to the ``(H, W)`` of ``shape`` with ``mode``, clamped to [-1, 1]
    (bicubic overshoots)."""
    from ..imagen.pipeline import upsample as resize

    return resize(images, shape, mode).clamp(-1, 1)


def degrade(task: str, images: Tensor, *, low_resolution: int = 8,
            grey_levels: int = 4) -> Tensor:
    """The source a model of ``task`` is given for clean ``images``: the low-resolution
    image, the quantised grey image, or (mask tasks) the images themselves (their hole
    is zeroed by :func:`condition`)."""
    if task == "super-resolution":
        return downsample(images, low_resolution)
    if task == "colourisation":
        return grey(images, grey_levels)
    if task in MASK_TASKS:
        return images
    raise BadConfig(f"unknown image-to-image task {task!r} (tasks: {', '.join(TASKS)})")


def source_shape(task: str, shape: Sequence[int], *, low_resolution: int = 8) -> tuple[int, ...]:
    """The ``(C, H, W)`` of a task's source for targets of ``shape``."""
    c, h, w = (int(n) for n in shape)
    if task == "super-resolution":
        return (c, low_resolution, low_resolution)
    if task == "colourisation":
        return (1, h, w)
    return (c, h, w)


def condition(task: str, source: Tensor, masks: Tensor | None, shape: Sequence[int], *,
              upsample_mode: str = "bicubic", grey_levels: int = 4) -> Tensor:
    """The ``(B, C + 1, H, W)`` concat input (module doc) of ``source`` for targets of
    ``shape`` ``(C, H, W)``; ``masks`` are needed by the mask tasks only."""
    c = int(shape[0])
    size = tuple(int(n) for n in shape[-2:])
    n = source.shape[0]
    if task == "super-resolution":
        image = upsample(source, shape, upsample_mode)
        m = full_masks(n, size).to(source)
    elif task == "colourisation":
        image = grey(source, grey_levels).expand(n, c, *size)
        m = full_masks(n, size).to(source)
    elif task in MASK_TASKS:
        if masks is None:
            raise BadConfig(f"the {task} task needs masks")
        m = masks.to(source)
        image = source * (1 - m)
    else:
        raise BadConfig(f"unknown image-to-image task {task!r} (tasks: {', '.join(TASKS)})")
    return torch.cat([image, m], 1)


def paste(x: Tensor, known: Tensor, masks: Tensor) -> Tensor:
    """``x·m + known·(1 − m)``: the generated region from ``x``, the rest from ``known``."""
    return x * masks + known * (1 - masks)


def describe(task: str, options: Any) -> str:
    """A short human description of a task's setting (for logs)."""
    if task == "super-resolution":
        return f"super-resolution from {options.low_resolution} px"
    if task == "colourisation":
        return f"colourisation from {options.grey_levels} grey levels"
    return f"{task} with {', '.join(options.mask_kinds)} masks"
