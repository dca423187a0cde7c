"""Writing image grids: rows of samples in [-1, 1] as one PNG (``gaf sample``, the
image objectives' sample sheets)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["save_grid"]


def save_grid(rows: Tensor, path: Path, pad: int = 2) -> Path:
    """Write ``rows`` ``(R, K, C, H, W)`` in [-1, 1] as one PNG grid (R rows of K)."""
    from PIL import Image

    r, k, c, h, w = rows.shape
    canvas = torch.ones(c, r * (h + pad) + pad, k * (w + pad) + pad)
    for i in range(r):
        for j in range(k):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y:y + h, x:x + w] = (rows[i, j].float().clamp(-1, 1) + 1) / 2
    array = (canvas * 255).round().byte().permute(1, 2, 0).numpy()
    if c == 1:
        array = array[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
