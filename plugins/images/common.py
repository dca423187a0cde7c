"""Helpers shared by the file-based image datasets (``idx``, ``folder``).

* :func:`uint8_to_unit` maps uint8 pixels to float32 in [-1, 1] exactly as
  ``x / 127.5 - 1`` (0 → -1, 255 → 1);
* :func:`resize_square` resizes a ``(C, H, W)`` tensor bilinearly (anti-aliased when
  shrinking) and clamps the result to [-1, 1];
* :func:`check_index` turns a Python index (negative allowed) into a position or
  raises ``IndexError``;
* :func:`check_channels` / :func:`check_resolution` validate common options;
* :func:`collate` batches items for a ``torch.utils.data.DataLoader``
  (``collate_fn=collate``): images and labels are stacked, every other key becomes a
  list (``torch``'s default collate cannot batch the ``None`` in a one-object
  ``shapes`` scene's ``attributes``).

(The seeded epoch-by-epoch shuffle training objectives draw their batches from is
the core's :class:`gaf.seeding.EpochOrder`.)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.errors import BadConfig

__all__ = ["uint8_to_unit", "resize_square", "check_index", "check_channels",
           "check_resolution", "collate"]


def uint8_to_unit(array: np.ndarray) -> Tensor:
    """uint8 array (H, W) or (H, W, C) → float32 tensor (C, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.array(array, dtype=np.uint8)).to(torch.float32)  # a copy
    if t.dim() == 2:
        t = t.unsqueeze(0)
    else:
        t = t.permute(2, 0, 1).contiguous()
    return t.div_(127.5).sub_(1.0)


def resize_square(image: Tensor, resolution: int) -> Tensor:
    """Bilinear resize of ``(C, H, W)`` to ``(C, resolution, resolution)``."""
    if image.shape[-2:] == (resolution, resolution):
        return image
    out = F.interpolate(image.unsqueeze(0), size=(resolution, resolution),
                        mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0).clamp_(-1.0, 1.0)


def check_index(index: int, n: int, what: str) -> int:
    i = operator.index(index)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"{what} index {index} out of range for {n} items")
    return i


def check_channels(channels: int, what: str) -> None:
    if channels not in (1, 3):
        raise BadConfig(f"{what}: channels must be 1 or 3, got {channels!r}")


def check_resolution(resolution: int, what: str, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(resolution, int) or resolution < low:
        extra = " (0 = as stored)" if allow_zero else ""
        raise BadConfig(f"{what}: resolution must be an integer >= {low}{extra}, "
                        f"got {resolution!r}")


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items → ``{"image": (B, C, H, W), "label": (B,) int64, other keys: lists}``."""
    if not items:
        raise ValueError("collate needs at least one item")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "image":
            out[key] = torch.stack(values)
        elif key == "label":
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out

