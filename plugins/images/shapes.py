"""``shapes``: procedural coloured shapes on a 3x3 grid, with captions.

The main dataset of the text-to-image work: unlimited, deterministic per seed, cheap
to render, and with an exact analytic evaluator
(:mod:`gaf.plugins.images.shapes_eval`) that reads the scene back from the pixels.

Content
-------
A scene has one object, or two objects of *different colours* in neighbouring grid
cells. Each object has

* a colour from a palette of six far-apart colours (:data:`COLOURS`, RGB in
  :data:`PALETTE`): red, green, blue, yellow, purple, cyan;
* a shape (:data:`SHAPES`): circle, square, triangle (apex up), diamond, cross;
* a size (:data:`SIZES`): ``small`` (bounding box half a grid cell wide) or ``large``
  (0.8 of a cell);
* a position: one cell of the 3x3 grid (:data:`POSITIONS`, ``"top left"``,
  ``"top middle"``, …, ``"middle"``, …, ``"bottom right"``); the object's bounding box
  is centred in its cell (no jitter).

With two objects the scene also has a relation (:data:`RELATIONS`): ``"left of"``,
``"right of"``, ``"above"`` or ``"below"``, read "the first object is <relation> the
second"; the second object sits in the cell next to the first one in that direction
(``"above"``: one row below the first), so the first object's cell and the relation
fix both cells.

Images are ``(3, R, R)`` float32 in ``[-1, 1]`` on a black background (``-1``),
``R`` = 16, 32 or 64. Shapes are drawn with analytic anti-aliasing: the coverage of a
pixel is ``clip(0.5 - d, 0, 1)`` with ``d`` the signed distance (in pixels) from the
pixel centre to the shape's outline, and a pixel is ``coverage * colour``. The
coverage maps of every (shape, size, cell) are computed once per resolution (90 maps,
1.5 MB at 64x64), so rendering an item is one or two multiply-adds (tens of
thousands of images per second on one core).

Items
-----
``ds[i]`` is ``{"image", "caption", "label", "attributes"}``:

* ``label`` = ``colour_index * len(SHAPES) + shape_index`` of the first object
  (``num_classes`` = 30, ``class_names[k]`` = e.g. ``"red circle"``); classes of the
  held-out pairs exist but never occur in ``train``/``eval``;
* ``attributes`` (also :meth:`ShapesDataset.attributes`, no rendering) is a plain
  dict: ``colour``, ``shape``, ``size``, ``position``, ``row``, ``col`` of the first
  object, ``second`` (``None`` or a dict with the same six keys) and ``relation``
  (``None`` or one of :data:`RELATIONS`);
* ``caption`` is one of several templates (:data:`SINGLE_TEMPLATES`,
  :data:`PAIR_TEMPLATES`), chosen deterministically per item, e.g. ``"a red circle in
  the top left"``, ``"a small red circle at the top left"``, ``"top left: a red
  circle"``, ``"a large red circle to the left of a small blue square"``, ``"a red
  circle in the top left to the left of a blue square"``. Every caption names every
  object's colour and shape, and the first object's position (single objects) or the
  relation (pairs); some templates also name sizes or the position of a pair. The
  attributes that a caption states are :func:`caption_attributes`, and
  :func:`gaf.plugins.images.shapes_eval.parse_caption` recovers exactly them.

Splits
------
The *scene* (everything but the caption template) decides the split, so no image
occurs in two of ``train``, ``validation``, ``eval`` and ``swapped``:

* ``heldout`` — every scene with an object whose (colour, shape) is one of
  :data:`HELDOUT_PAIRS`: red triangle, green square, blue diamond, yellow circle,
  purple cross, cyan triangle (one per colour; every shape keeps at least four
  colours in training). These compositions never occur in ``train``, ``eval`` or
  ``swapped``. The first object of a ``heldout`` scene need not be the held-out one.
* ``train`` / ``validation`` / ``eval`` — the other scenes, split by one seeded hash
  ``u ∈ [0, 1)`` of the scene with the two colours unordered (so a scene and its
  colour-swapped twin fall on the same side): ``u < eval_fraction`` (default 0.1) is
  ``eval``, ``eval_fraction ≤ u < eval_fraction + validation_fraction`` (default 0.05)
  is ``validation``, the rest (0.85 of the non-held-out scenes by default) is
  ``train``. Same distribution, three disjoint scene sets; ``validation`` is carved
  out of what was ``train``, so ``eval`` does not depend on ``validation_fraction``.
  Anything tuned (guidance, sampling steps, temperature …) is chosen on
  ``validation``, never on ``eval``.
* ``swapped`` — pairs of two-object ``eval`` scenes that swap the colours of the two
  objects: items ``2k`` and ``2k+1`` have the same shapes, sizes, cells, relation and
  caption template, and exchanged colours ("a red circle above a blue square" /
  "a blue circle above a red square"), for testing attribute binding. The two shapes
  of a pair differ, and neither member contains a held-out pair.

Items are drawn independently per index: ``ds[i]`` depends only on ``(seed, split,
i, two_objects, eval_fraction, resolution)``, not on ``size``. The fraction of
two-object items is ``two_objects`` (``swapped``: always two).
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig

__all__ = [
    "COLOURS", "PALETTE", "SHAPES", "SIZES", "POSITIONS", "RELATIONS", "HELDOUT_PAIRS",
    "SINGLE_TEMPLATES", "PAIR_TEMPLATES", "RESOLUTIONS", "SPLITS",
    "ShapesConfig", "ShapesDataset", "caption", "caption_attributes", "render",
    "is_heldout",
]

COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
#: RGB in [0, 1] (black background); pairwise at least 28 degrees apart as directions
PALETTE = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.80, 0.15),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.70, 0.15, 0.95),
    "cyan": (0.10, 0.85, 0.85),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = ("small", "large")
#: bounding-box width of each size, as a fraction of a grid cell
SIZE_FRACTION = {"small": 0.5, "large": 0.8}
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "middle", "right")
#: cell ``row * 3 + col`` → its name
POSITIONS = tuple("middle" if (r, c) == ("middle", "middle") else f"{r} {c}"
                  for r in _ROWS for c in _COLS)
RELATIONS = ("left of", "right of", "above", "below")
#: how a relation is written in captions
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of",
                    "above": "above", "below": "below"}
#: (row, col) step from the first object's cell to the second's
RELATION_STEP = {"left of": (0, 1), "right of": (0, -1), "above": (1, 0), "below": (-1, 0)}
HELDOUT_PAIRS = (("red", "triangle"), ("green", "square"), ("blue", "diamond"),
                 ("yellow", "circle"), ("purple", "cross"), ("cyan", "triangle"))
RESOLUTIONS = (16, 32, 64)
#: in the order of their draw salts (a new split goes at the end, so the others keep
#: their items)
SPLITS = ("train", "eval", "heldout", "swapped", "validation")

#: single-object captions ({size} is optional: a template without it leaves size open)
SINGLE_TEMPLATES = (
    "a {colour} {shape} in the {position}",
    "a {size} {colour} {shape} in the {position}",
    "a {size} {colour} {shape} at the {position}",
    "{position}: a {colour} {shape}",
    "{position}: a {size} {colour} {shape}",
    "there is a {size} {colour} {shape} in the {position}",
)
#: two-object captions; a position always refers to the first object
PAIR_TEMPLATES = (
    "a {colour} {shape} {relation} a {colour2} {shape2}",
    "a {size} {colour} {shape} {relation} a {size2} {colour2} {shape2}",
    "a {colour} {shape} in the {position} {relation} a {colour2} {shape2}",
    "{position}: a {size} {colour} {shape} {relation} a {size2} {colour2} {shape2}",
)

_OBJECT_KEYS = ("colour", "shape", "size", "position", "row", "col")


# ---------------------------------------------------------------------- geometry


def cell_size(resolution: int) -> float:
    return resolution / 3.0


def cell_centre(row: int, col: int, resolution: int) -> tuple[float, float]:
    """(x, y) pixel coordinates of a cell's centre (pixel ``j`` spans ``[j, j+1)``)."""
    c = cell_size(resolution)
    return (col + 0.5) * c, (row + 0.5) * c


def radius(size: str, resolution: int) -> float:
    """Half the bounding-box width of an object of ``size``, in pixels."""
    return SIZE_FRACTION[size] * cell_size(resolution) / 2.0


def centroid_offset(shape: str, r: float) -> tuple[float, float]:
    """Centroid minus bounding-box centre (the triangle's centroid is r/3 lower)."""
    return (0.0, r / 3.0) if shape == "triangle" else (0.0, 0.0)


def signed_distance(shape: str, r: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points ``(dx, dy)`` relative to the
    bounding-box centre to the outline of ``shape`` with half-width ``r``."""
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return np.maximum(ax, ay) - r
    if shape == "diamond":
        return (ax + ay - r) / np.sqrt(2.0)
    if shape == "triangle":  # apex (0, -r), base corners (-r, r) and (r, r)
        side = (2.0 * ax - (dy + r)) / np.sqrt(5.0)
        return np.maximum(dy - r, side)
    if shape == "cross":  # a plus sign, arms 0.8 r wide
        w = 0.4 * r
        return np.minimum(np.maximum(ax - r, ay - w), np.maximum(ax - w, ay - r))
    raise ValueError(f"unknown shape {shape!r}")


def coverage(shape: str, r: float, cx: float, cy: float,
             xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] at pixel centres ``(xs, ys)`` (arrays that
    broadcast) of ``shape`` with bounding-box centre ``(cx, cy)``."""
    return np.clip(0.5 - signed_distance(shape, r, xs - cx, ys - cy), 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _coverage_table(resolution: int) -> Tensor:
    """(shapes, sizes, 9 cells, R, R) float32 coverage maps."""
    centres = np.arange(resolution, dtype=np.float64) + 0.5
    xs, ys = centres[None, :], centres[:, None]
    table = np.zeros((len(SHAPES), len(SIZES), 9, resolution, resolution), np.float32)
    for i, shape in enumerate(SHAPES):
        for j, size in enumerate(SIZES):
            r = radius(size, resolution)
            for cell in range(9):
                cx, cy = cell_centre(cell // 3, cell % 3, resolution)
                table[i, j, cell] = coverage(shape, r, cx, cy, xs, ys)
    return torch.from_numpy(table)


_PALETTE_T = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float32)


def _render_codes(table: Tensor, objects: list[tuple[int, int, int, int]]) -> Tensor:
    """objects: (colour, shape, size, cell) indices → (3, R, R) in [-1, 1]."""
    c, s, z, cell = objects[0]
    img = table[s, z, cell].unsqueeze(0) * _PALETTE_T[c].view(3, 1, 1)
    for c, s, z, cell in objects[1:]:
        img = img.addcmul_(table[s, z, cell].unsqueeze(0), _PALETTE_T[c].view(3, 1, 1))
    return img.mul_(2.0).sub_(1.0)


def render(attributes: dict[str, Any], resolution: int = 32) -> Tensor:
    """Render a scene given as an attributes dict (the format of ``ds[i]["attributes"]``;
    ``row``/``col`` or ``position`` locate each object) → ``(3, R, R)`` in [-1, 1]."""
    _check_resolution(resolution)
    objects = [_object_codes(attributes)]
    if attributes.get("second"):
        objects.append(_object_codes(attributes["second"]))
    return _render_codes(_coverage_table(resolution), objects)


def _object_codes(obj: dict[str, Any]) -> tuple[int, int, int, int]:
    if "row" in obj and "col" in obj:
        cell = int(obj["row"]) * 3 + int(obj["col"])
    else:
        cell = POSITIONS.index(obj["position"])
    return (COLOURS.index(obj["colour"]), SHAPES.index(obj["shape"]),
            SIZES.index(obj["size"]), cell)


# ---------------------------------------------------------------------- captions


def _object_dict(c: int, s: int, z: int, cell: int) -> dict[str, Any]:
    return {"colour": COLOURS[c], "shape": SHAPES[s], "size": SIZES[z],
            "position": POSITIONS[cell], "row": cell // 3, "col": cell % 3}


def _templates(attributes: dict[str, Any]) -> tuple[str, ...]:
    return PAIR_TEMPLATES if attributes.get("second") else SINGLE_TEMPLATES


def caption(attributes: dict[str, Any], template: int = 0) -> str:
    """The caption of a scene with template number ``template`` (of
    :data:`SINGLE_TEMPLATES` or :data:`PAIR_TEMPLATES`, by the number of objects)."""
    templates = _templates(attributes)
    fields = {k: attributes[k] for k in ("colour", "shape", "size", "position")}
    second = attributes.get("second")
    if second:
        fields.update(colour2=second["colour"], shape2=second["shape"],
                      size2=second["size"], relation=RELATION_PHRASES[attributes["relation"]])
    return templates[template % len(templates)].format(**fields)


def caption_attributes(attributes: dict[str, Any], template: int = 0) -> dict[str, Any]:
    """The part of ``attributes`` that :func:`caption` with ``template`` states.

    Always ``colour`` and ``shape`` of each object, ``second`` and ``relation``;
    ``size`` / ``size`` of the second object when the template names sizes;
    ``position``, ``row``, ``col`` of the first object when it names a position
    (and then of the second object too, which the relation places)."""
    templates = _templates(attributes)
    text = templates[template % len(templates)]
    keys = ["colour", "shape"]
    if "{size}" in text:
        keys.append("size")
    if "{position}" in text:
        keys += ["position", "row", "col"]
    out: dict[str, Any] = {k: attributes[k] for k in keys}
    second = attributes.get("second")
    out["second"] = {k: second[k] for k in keys} if second else None
    out["relation"] = attributes.get("relation") if second else None
    return out


def is_heldout(colour: str, shape: str) -> bool:
    """Whether (colour, shape) is one of the compositions kept out of train and eval."""
    return (colour, shape) in HELDOUT_PAIRS


# ---------------------------------------------------------------------- scene space

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _u64(value: int) -> np.ndarray:
    return np.array([value % (1 << 64)], dtype=np.uint64)


@functools.lru_cache(maxsize=4)
def _scene_table() -> dict[str, np.ndarray]:
    """Every scene as columns c1, s1, z1, cell1, c2, s2, z2, cell2, rel (-1: none)."""
    nc, ns, nz = len(COLOURS), len(SHAPES), len(SIZES)
    single = np.indices((nc, ns, nz, 9)).reshape(4, -1)
    pair = np.indices((nc, ns, nz, nc, ns, nz, len(RELATIONS), 9)).reshape(8, -1)
    c1, s1, z1, c2, s2, z2, rel, cell1 = pair
    row, col = cell1 // 3, cell1 % 3
    steps = np.array([RELATION_STEP[r] for r in RELATIONS])
    row2, col2 = row + steps[rel, 0], col + steps[rel, 1]
    keep = (c1 != c2) & (row2 >= 0) & (row2 <= 2) & (col2 >= 0) & (col2 <= 2)
    n1 = single.shape[1]
    cols = {
        "c1": np.concatenate([single[0], c1[keep]]),
        "s1": np.concatenate([single[1], s1[keep]]),
        "z1": np.concatenate([single[2], z1[keep]]),
        "cell1": np.concatenate([single[3], cell1[keep]]),
        "c2": np.concatenate([np.full(n1, -1), c2[keep]]),
        "s2": np.concatenate([np.full(n1, -1), s2[keep]]),
        "z2": np.concatenate([np.full(n1, -1), z2[keep]]),
        "cell2": np.concatenate([np.full(n1, -1), (row2 * 3 + col2)[keep]]),
        "rel": np.concatenate([np.full(n1, -1), rel[keep]]),
    }
    cols = {k: v.astype(np.int64) for k, v in cols.items()}
    two = cols["rel"] >= 0
    lo, hi = np.minimum(cols["c1"], cols["c2"]), np.maximum(cols["c1"], cols["c2"])
    key = (((((((lo * nc + hi) * ns + cols["s1"]) * nz + cols["z1"]) * ns + cols["s2"])
             * nz + cols["z2"]) * len(RELATIONS) + cols["rel"]) * 9 + cols["cell1"])
    single_key = ((cols["c1"] * ns + cols["s1"]) * nz + cols["z1"]) * 9 + cols["cell1"]
    cols["key"] = np.where(two, key + (1 << 40), single_key)
    held = np.zeros((nc, ns), bool)
    for c, s in HELDOUT_PAIRS:
        held[COLOURS.index(c), SHAPES.index(s)] = True
    cols["heldout"] = held[cols["c1"], cols["s1"]] | (two & held[cols["c2"], cols["s2"]])
    # the colour-swapped twin contains (c2, s1) and (c1, s2)
    cols["swap_heldout"] = two & (held[cols["c2"], cols["s1"]] | held[cols["c1"], cols["s2"]])
    return cols


# ---------------------------------------------------------------------- dataset


@attrs.define
class ShapesConfig:
    """Options of the ``shapes`` dataset."""

    resolution: int = option(32, "image side in pixels: 16, 32 or 64")
    split: str = option("train", "train, validation (for tuning), eval, heldout (unseen "
                        "colour-shape pairs) or swapped (pairs of items with the two "
                        "objects' colours exchanged)")
    size: int = option(10000, "number of items in the split")
    seed: int = option(0, "seed of the train/eval partition and of the items")
    two_objects: float = option(0.5, "fraction of items with two objects and a relation "
                                "(the swapped split always has two)")
    eval_fraction: float = option(0.1, "fraction of the non-held-out scenes reserved for eval")
    validation_fraction: float = option(0.05, "fraction of the non-held-out scenes reserved "
                                              "for validation (taken from train)")


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise BadConfig(f"dataset shapes: resolution must be one of 16, 32, 64, "
                        f"got {resolution!r}")


class ShapesDataset:
    """Procedural captioned shapes: one or two coloured shapes on a 3x3 grid.

    ``ds[i]`` → ``{"image" (3, R, R) in [-1, 1], "caption", "label", "attributes"}``;
    splits train / validation / eval (disjoint scenes), heldout (unseen colour-shape
    pairs) and swapped (colour-exchanged pairs). ``attributes(i)``, ``caption(i)``,
    ``captions()`` and ``labels()`` need no rendering. Score generated images with
    :class:`gaf.plugins.images.shapes_eval.ShapesEvaluator` (``evaluator()``).
    """

    Config = ShapesConfig
    channels = 3

    def __init__(self, config: ShapesConfig | None = None):
        cfg = config if config is not None else ShapesConfig()
        self.config = cfg
        _check_resolution(cfg.resolution)
        if cfg.split not in SPLITS:
            raise BadConfig(f"dataset shapes: unknown split {cfg.split!r}; "
                            f"valid splits: {', '.join(SPLITS)}")
        if cfg.size < 1:
            raise BadConfig(f"dataset shapes: size must be >= 1, got {cfg.size}")
        if not 0.0 <= cfg.two_objects <= 1.0:
            raise BadConfig(f"dataset shapes: two_objects must be in [0, 1], "
                            f"got {cfg.two_objects}")
        if not 0.0 < cfg.eval_fraction < 1.0:
            raise BadConfig(f"dataset shapes: eval_fraction must be in (0, 1), "
                            f"got {cfg.eval_fraction}")
        if not (0.0 < cfg.validation_fraction
                and cfg.eval_fraction + cfg.validation_fraction < 1.0):
            raise BadConfig(f"dataset shapes: validation_fraction must be > 0 and "
                            f"eval_fraction + validation_fraction < 1, got "
                            f"{cfg.validation_fraction} (eval_fraction {cfg.eval_fraction})")
        self.resolution = cfg.resolution
        self.num_classes = len(COLOURS) * len(SHAPES)
        self.class_names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
        self._items = self._draw_items()
        self._table = _coverage_table(cfg.resolution)

    # ------------------------------------------------------------------ map-style API

    def __len__(self) -> int:
        return self.config.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._index(index)
        it = self._items
        objects = [(it["c1"][i], it["s1"][i], it["z1"][i], it["cell1"][i])]
        if it["rel"][i] >= 0:
            objects.append((it["c2"][i], it["s2"][i], it["z2"][i], it["cell2"][i]))
        attributes = self._attributes(i)
        return {
            "image": _render_codes(self._table, objects),
            "caption": caption(attributes, int(it["template"][i])),
            "label": int(it["c1"][i]) * len(SHAPES) + int(it["s1"][i]),
            "attributes": attributes,
        }

    # ------------------------------------------------------------------ extras

    def attributes(self, index: int) -> dict[str, Any]:
        """The scene of item ``index`` (no rendering)."""
        return self._attributes(self._index(index))

    def caption(self, index: int) -> str:
        """The caption of item ``index`` (no rendering)."""
        i = self._index(index)
        return caption(self._attributes(i), int(self._items["template"][i]))

    def template(self, index: int) -> int:
        """The caption template number of item ``index``."""
        return int(self._items["template"][self._index(index)])

    def evaluator(self) -> Any:
        """The analytic :class:`~gaf.plugins.images.shapes_eval.ShapesEvaluator` at this
        resolution (text-to-image objectives score their samples with it)."""
        from .shapes_eval import ShapesEvaluator

        return ShapesEvaluator(self.resolution)

    def captions(self) -> list[str]:
        """All captions of the split, in order, without rendering."""
        return [caption(self._attributes(i), int(t))
                for i, t in enumerate(self._items["template"])]

    def labels(self) -> list[int]:
        """All labels of the split, in order, without rendering."""
        it = self._items
        return (it["c1"] * len(SHAPES) + it["s1"]).tolist()

    # ------------------------------------------------------------------ internals

    def _index(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"shapes index {index} out of range for {n} items")
        return i

    def _attributes(self, i: int) -> dict[str, Any]:
        it = self._items
        out = _object_dict(int(it["c1"][i]), int(it["s1"][i]), int(it["z1"][i]),
                           int(it["cell1"][i]))
        rel = int(it["rel"][i])
        if rel >= 0:
            out["second"] = _object_dict(int(it["c2"][i]), int(it["s2"][i]),
                                         int(it["z2"][i]), int(it["cell2"][i]))
            out["relation"] = RELATIONS[rel]
        else:
            out["second"], out["relation"] = None, None
        return out

    def _pools(self) -> tuple[np.ndarray, np.ndarray]:
        """Scene indices (single-object, two-object) that the split draws from."""
        cfg = self.config
        scenes = _scene_table()
        salt = _mix(_u64(cfg.seed) ^ _u64(0x5EED_0F_5CE4E5))
        h = _mix(scenes["key"].astype(np.uint64) ^ salt)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        is_eval = u < cfg.eval_fraction
        is_validation = ~is_eval & (u < cfg.eval_fraction + cfg.validation_fraction)
        two = scenes["rel"] >= 0
        held = scenes["heldout"]
        if cfg.split == "train":
            ok = ~is_eval & ~is_validation & ~held
        elif cfg.split == "validation":
            ok = is_validation & ~held
        elif cfg.split == "eval":
            ok = is_eval & ~held
        elif cfg.split == "heldout":
            ok = held
        else:  # swapped
            ok = (is_eval & two & ~held & ~scenes["swap_heldout"]
                  & (scenes["s1"] != scenes["s2"]))
        single_pool = np.flatnonzero(ok & ~two)
        pair_pool = np.flatnonzero(ok & two)
        return single_pool, pair_pool

    def _draw_items(self) -> dict[str, np.ndarray]:
        cfg = self.config
        scenes = _scene_table()
        single_pool, pair_pool = self._pools()
        swapped = cfg.split == "swapped"
        n = cfg.size
        draw_index = np.arange(n, dtype=np.uint64)
        if swapped:
            draw_index = draw_index // np.uint64(2)
        split_salt = _mix(_u64(cfg.seed) ^ _mix(_u64(SPLITS.index(cfg.split) + 17)))

        def u(k: int) -> np.ndarray:
            return _mix(split_salt ^ _mix(draw_index * np.uint64(4) + np.uint64(k)))

        p_two = 1.0 if swapped else cfg.two_objects
        two = (u(0) >> np.uint64(11)).astype(np.float64) / float(1 << 53) < p_two
        if (two.any() and len(pair_pool) == 0) or ((~two).any() and len(single_pool) == 0):
            raise BadConfig(f"dataset shapes: split {cfg.split!r} has no scenes with "
                            f"eval_fraction={cfg.eval_fraction}; choose a larger one")
        pick = u(1)
        scene = np.where(
            two,
            pair_pool[(pick % np.uint64(max(len(pair_pool), 1))).astype(np.int64)]
            if len(pair_pool) else 0,
            single_pool[(pick % np.uint64(max(len(single_pool), 1))).astype(np.int64)]
            if len(single_pool) else 0)
        items = {k: scenes[k][scene].copy()
                 for k in ("c1", "s1", "z1", "cell1", "c2", "s2", "z2", "cell2", "rel")}
        tpl = u(2)
        n_tpl = np.where(two, len(PAIR_TEMPLATES), len(SINGLE_TEMPLATES)).astype(np.uint64)
        items["template"] = (tpl % n_tpl).astype(np.int64)
        if swapped:
            odd = (np.arange(n) % 2) == 1
            c1 = items["c1"].copy()
            items["c1"][odd] = items["c2"][odd]
            items["c2"][odd] = c1[odd]
        return items
