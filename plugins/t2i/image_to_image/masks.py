"""Masks of the image-to-image tasks: which pixels a model generates.

**Convention (the whole project's):** a mask is a float tensor ``(B, 1, H, W)`` of exact
0s and 1s, **1 where the image is generated** (the hole) and 0 where it is known. A
mask file on the command line is white where it is generated.

Kinds (:data:`MASK_KINDS`), each drawn per image from a ``torch.Generator``:

``box``
    one axis-aligned rectangle, each side ``U{⌈H/4⌉ … ⌊H/2⌋}`` pixels (of ``H`` and
    ``W`` respectively), at a uniformly drawn position inside the image;
``grid``
    the image cut into ``GRID × GRID`` cells (the last ones absorb the remainder);
    each cell is a hole with probability ½, redrawn until at least one cell is a hole
    and one is known;
``stroke``
    free-form strokes (Palette's and LaMa's "irregular" masks, in miniature): 1 to 3
    polylines of 4 vertices, the first vertex uniform in the image, each next one a
    step of length ``U[H/8, H/3]`` in a uniform direction (clamped to the image),
    drawn with a half-width ``U[H/32, H/16]`` (at least 1 px): a pixel is in the stroke
    when its centre lies within the half-width of a segment;
``cell``
    one cell of a 3×3 grid, uniform, grown by one pixel on each side (clamped): the
    geometry of :func:`object_box` at a random cell, so some holes hide a whole
    ``shapes`` object and only the caption says what was there;
``half`` / ``quarter``
    uncropping: the strip of one side (left, right, top or bottom, uniform) that is
    half (``half``) or a quarter (``quarter``) of the image wide is generated, the rest
    is known (the model extends the picture outwards).

:func:`object_box` is the evaluation's inpainting mask: the ``shapes`` grid cell of an
item's first object, so the model must redraw the object its caption names.
:func:`check_masks` is what every consumer of a user's mask runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gaf.errors import BadConfig, BadData

__all__ = ["MASK_KINDS", "GRID", "draw_masks", "draw_mask", "object_box", "check_masks",
           "full_masks"]

MASK_KINDS = ("box", "grid", "stroke", "cell", "half", "quarter")
#: cells per side of the ``grid`` masks
GRID = 4


def _uniform(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _randint(lo: int, hi: int, gen: torch.Generator) -> int:
    """Uniform integer in ``[lo, hi]`` (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _box(h: int, w: int, gen: torch.Generator) -> Tensor:
    m = torch.zeros(h, w)
    bh = _randint(max(1, math.ceil(h / 4)), max(1, h // 2), gen)
    bw = _randint(max(1, math.ceil(w / 4)), max(1, w // 2), gen)
    top, left = _randint(0, h - bh, gen), _randint(0, w - bw, gen)
    m[top:top + bh, left:left + bw] = 1
    return m


def _cells(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive ranges covering ``range(n)``; the last absorbs the rest."""
    step = max(1, n // parts)
    edges = [min(n, k * step) for k in range(parts)] + [n]
    return [(edges[k], edges[k + 1]) for k in range(parts) if edges[k] < edges[k + 1]]


def _grid(h: int, w: int, gen: torch.Generator) -> Tensor:
    rows, cols = _cells(h, GRID), _cells(w, GRID)
    while True:
        holes = torch.rand(len(rows), len(cols), generator=gen) < 0.5
        if holes.any() and not holes.all():
            break
    m = torch.zeros(h, w)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            if holes[i, j]:
                m[r0:r1, c0:c1] = 1
    return m


def segment_distance(ys: Tensor, xs: Tensor, a: tuple[float, float],
                     b: tuple[float, float]) -> Tensor:
    """Distance of the points ``(ys, xs)`` to the segment from ``a`` to ``b`` (``(y, x)``)."""
    ay, ax = a
    dy, dx = b[0] - ay, b[1] - ax
    length2 = dy * dy + dx * dx
    if length2 == 0:
        return torch.hypot(ys - ay, xs - ax)
    s = (((ys - ay) * dy + (xs - ax) * dx) / length2).clamp(0, 1)
    return torch.hypot(ys - (ay + s * dy), xs - (ax + s * dx))


def _stroke(h: int, w: int, gen: torch.Generator) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    m = torch.zeros(h, w, dtype=torch.bool)
    side = min(h, w)
    for _ in range(_randint(1, 3, gen)):
        half_width = max(1.0, side / 32 + _uniform(gen) * side / 32)
        point = (_uniform(gen) * h, _uniform(gen) * w)
        for _ in range(3):
            length = side / 8 + _uniform(gen) * (side / 3 - side / 8)
            angle = _uniform(gen) * 2 * math.pi
            nxt = (min(max(point[0] + length * math.sin(angle), 0.0), float(h)),
                   min(max(point[1] + length * math.cos(angle), 0.0), float(w)))
            m |= segment_distance(ys, xs, point, nxt) <= half_width
            point = nxt
    if not m.any():  # cannot happen with half-width >= 1, kept as a guard
        m[h // 2, w // 2] = True
    return m.float()


def _cell_box(row: int, col: int, h: int, w: int, margin: int) -> Tensor:
    """``(H, W)``: cell ``(row, col)`` of a 3×3 grid grown by ``margin`` (clamped)."""
    top, bottom = math.floor(row * h / 3) - margin, math.ceil((row + 1) * h / 3) + margin
    left, right = math.floor(col * w / 3) - margin, math.ceil((col + 1) * w / 3) + margin
    m = torch.zeros(h, w)
    m[max(0, top):min(h, bottom), max(0, left):min(w, right)] = 1
    return m


def _cell(h: int, w: int, gen: torch.Generator) -> Tensor:
    row, col = _randint(0, 2, gen), _randint(0, 2, gen)
    m = _cell_box(row, col, h, w, 1)
    return m if not m.all() else _cell_box(row, col, h, w, 0)  # tiny images only


def _side(h: int, w: int, gen: torch.Generator, fraction: float) -> Tensor:
    """The strip of one side (0 left, 1 right, 2 top, 3 bottom) ``fraction`` wide."""
    m = torch.zeros(h, w)
    side = _randint(0, 3, gen)
    kw, kh = max(1, round(w * fraction)), max(1, round(h * fraction))
    if side == 0:
        m[:, :kw] = 1
    elif side == 1:
        m[:, w - kw:] = 1
    elif side == 2:
        m[:kh, :] = 1
    else:
        m[h - kh:, :] = 1
    return m


def draw_mask(kind: str, size: Sequence[int], generator: torch.Generator) -> Tensor:
    """One ``(1, H, W)`` mask of ``kind`` (module doc) drawn from ``generator``."""
    h, w = int(size[0]), int(size[1])
    if kind == "box":
        m = _box(h, w, generator)
    elif kind == "grid":
        m = _grid(h, w, generator)
    elif kind == "stroke":
        m = _stroke(h, w, generator)
    elif kind == "cell":
        m = _cell(h, w, generator)
    elif kind == "half":
        m = _side(h, w, generator, 0.5)
    elif kind == "quarter":
        m = _side(h, w, generator, 0.25)
    else:
        from gaf.errors import did_you_mean

        raise BadConfig(f"unknown mask kind {kind!r}{did_you_mean(kind, MASK_KINDS)} "
                        f"(kinds: {', '.join(MASK_KINDS)})")
    return m[None]


def draw_masks(kinds: Sequence[str], n: int, size: Sequence[int],
               generator: torch.Generator) -> Tensor:
    """``(n, 1, H, W)`` masks, each of a kind drawn uniformly from ``kinds``, all from
    ``generator`` (the same generator state gives the same masks)."""
    if not kinds:
        raise BadConfig("no mask kinds given")
    out = []
    for _ in range(n):
        kind = kinds[_randint(0, len(kinds) - 1, generator)] if len(kinds) > 1 else kinds[0]
        out.append(draw_mask(kind, size, generator))
    return torch.stack(out) if out else torch.zeros(0, 1, int(size[0]), int(size[1]))


def full_masks(n: int, size: Sequence[int]) -> Tensor:
    """``(n, 1, H, W)`` ones: every pixel generated (super-resolution, colourisation)."""
    return torch.ones(n, 1, int(size[0]), int(size[1]))


def object_box(attributes: dict[str, Any], size: Sequence[int], margin: int = 1) -> Tensor:
    """``(1, H, W)``: the ``shapes`` grid cell (3×3 grid) of the scene's first object,
    grown by ``margin`` pixels on each side (clamped to the image)."""
    h, w = int(size[0]), int(size[1])
    return _cell_box(int(attributes["row"]), int(attributes["col"]), h, w, margin)[None]


def check_masks(masks: Tensor, images: Tensor, where: str = "mask") -> Tensor:
    """``masks`` checked against ``images`` ``(B, C, H, W)`` and returned as float32:
    shape ``(B, 1, H, W)``, every value exactly 0 or 1 (a JPEG's or a resized mask's
    in-between greys are refused, not thresholded), and per image neither empty
    (nothing to generate) nor full (nothing known). A :class:`BadData` names the first
    image that fails (``where`` says what the masks are, e.g. a file name)."""
    if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[1] != 1 \
            or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise BadData(f"{where}: expected masks of shape {(images.shape[0], 1, *images.shape[-2:])}"
                      f" (1 = generate, 0 = keep), got {got}")
    m = masks.float()
    bad = ~((m == 0) | (m == 1))
    if bad.any():
        i = int(bad.flatten(1).any(1).nonzero()[0])
        n = int(bad[i].sum())
        raise BadData(f"{where}: image {i}'s mask is not binary ({n} pixels are neither 0 "
                      f"nor 1; a JPEG or resized mask is not): save it as a PNG of pure "
                      f"black and white")
    area = m.flatten(1).sum(1)
    total = m[0].numel()
    for i, a in enumerate(area.tolist()):
        if a == 0:
            raise BadData(f"{where}: image {i}'s mask is empty (nothing to generate; white "
                          f"marks what is generated)")
        if a == total:
            raise BadData(f"{where}: image {i}'s mask is full (nothing is known; sample "
                          f"from a prompt instead)")
    return m
