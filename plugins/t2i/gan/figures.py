"""The two figures of Reed et al. (2016), as image grids.

* :func:`interpolation_figure` (``interpolation.png``): each row one fixed ``z``, the
  text embedding moved in equal steps from one caption's to another's (the paper's
  Figure 8: the style stays, the content follows the text);
* :func:`noise_figure` (``noise.png``): each row one fixed caption, each column another
  ``z`` (the paper's Figure 6: what the noise controls once the text is fixed).

A ``.txt`` beside each grid names its captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...images.grid import save_grid
from ..diffusion_pipeline import per_sample_generators, per_sample_noise
from .losses import interpolate

__all__ = ["interpolation_figure", "noise_figure"]


def interpolation_figure(pipe: Any, captions: Sequence[str], out_dir: Path, *, seed: int = 0,
                         rows: int = 4, steps: int = 8) -> Path:
    """``rows`` pairs of distinct captions (the first ones of ``captions``), each with its
    own fixed ``z``, interpolated in ``steps`` columns from the first caption (β = 1) to
    the second (β = 0)."""
    distinct = list(dict.fromkeys(captions))[:2 * rows]
    pairs = [(distinct[2 * i], distinct[2 * i + 1]) for i in range(len(distinct) // 2)]
    z = per_sample_noise((pipe.generator.config.z_dim,),
                         per_sample_generators(seed, len(pairs)), pipe.device)
    e1 = pipe.embed([a for a, _ in pairs]).to(pipe.device)
    e2 = pipe.embed([b for _, b in pairs]).to(pipe.device)
    grid = torch.stack([pipe.generate(z, interpolate(e1, e2, 1 - j / (steps - 1)))
                        for j in range(steps)], dim=1)
    path = save_grid(grid, Path(out_dir) / "interpolation.png")
    path.with_suffix(".txt").write_text(
        f"each row: one z; columns: the embedding from caption A (left) to caption B (right) "
        f"in {steps} steps\n"
        + "".join(f"row {i + 1}: A = {a!r}, B = {b!r}\n" for i, (a, b) in enumerate(pairs)),
        encoding="utf-8")
    return path


def noise_figure(pipe: Any, captions: Sequence[str], out_dir: Path, *, seed: int = 0,
                 rows: int = 4, columns: int = 8) -> Path:
    """``rows`` captions (the first distinct ones of ``captions``), each sampled with the
    same ``columns`` noise vectors."""
    picked = list(dict.fromkeys(captions))[:rows]
    grid = torch.stack([pipe([c] * columns, seed=seed) for c in picked])
    path = save_grid(grid, Path(out_dir) / "noise.png")
    path.with_suffix(".txt").write_text(
        "columns: the same z in every row\n"
        + "".join(f"row {i + 1}: {c!r}\n" for i, c in enumerate(picked)), encoding="utf-8")
    return path
