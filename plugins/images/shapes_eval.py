"""The analytic evaluator of the ``shapes`` dataset: reads scenes back from pixels.

Text-to-image alignment on :mod:`gaf.plugins.images.shapes` is scored by plain image
analysis, not by a learned network, so no model used for training, guidance or
reranking can share its blind spots. On real renders it reads back what the caption
states (tests/images/test_shapes.py holds it to at least 98% exact matches at every
resolution, 95% under Gaussian noise of σ = 0.05; the measured ceiling is in
docs/results.md § Text to image); on shuffled captions it falls to chance. Calibrate
generated-image scores between those two.

Method (:meth:`ShapesEvaluator.read`)
-------------------------------------
1. **Colour segmentation against the palette.** Each pixel ``p`` (RGB in [0, 1], the
   background black) is compared with every palette colour ``c`` as a direction: the
   colour with the smallest residual ``|p - a c|`` at the best scale ``a = p·c / c·c``
   labels the pixel, and ``a`` is its coverage (anti-aliased edges are darker copies
   of the colour, so their direction still names it). Pixels with coverage ≥ 0.3 are
   foreground.
2. **Connected components** (8-neighbourhood) of foreground pixels of one colour are
   the candidate objects; each gets a coverage map (its pixels, plus the faint
   same-colour edge pixels around it), a mass (summed coverage) and a centroid.
   Components lighter than 40% of the smallest object at this resolution are noise
   and ignored. Objects are ordered by mass, heaviest first.
3. **Shape and size by least squares against the renderer's own outlines.** For each
   (shape, size), the anti-aliased coverage that :mod:`~gaf.plugins.images.shapes`
   would draw is placed with its centroid on the measured centroid (and, as a second
   candidate, at the nearest grid-cell centre), and the sum of squared differences to
   the component's coverage map is computed; the best (shape, size) wins. This
   compares every pixel, so noise averages out, and small objects at 16 px whose
   outlines are only a few pixels wide are still told apart by their edge coverage.
4. **Position**: the grid cell containing the object's bounding-box centre (the
   centroid, corrected by the triangle's centroid offset). **Relation** between two
   objects: the dominant axis of the displacement between their centres.

Scoring (:meth:`ShapesEvaluator.score`)
---------------------------------------
Targets are captions (parsed with :func:`parse_caption`) or attribute dicts (the
``attributes`` of a ``shapes`` item, or the output of :func:`parse_caption`). Only
the attributes a target states are scored. The target's objects are matched with
the heaviest detected objects (for two objects, whichever of the two assignments
gets more colour/shape/size/position matches; ties keep the mass order). Metrics:
``colour``, ``shape``, ``size``, ``position`` (per object), ``relation`` (per
two-object target), ``count`` (the number of detected objects equals the number of
target objects) and ``exact`` (everything stated, and the count, right), each the
fraction correct; ``size``, ``position`` and ``relation`` appear only when some
target states them. ``n`` is the number of images.

Captions (:func:`parse_caption`)
--------------------------------
Lower-cased; ``center``/``centre`` read as ``middle``, ``big`` as ``large``,
``little``/``tiny`` as ``small``, ``colour``/``color`` words as in
:data:`~gaf.plugins.images.shapes.COLOURS`. One or two object phrases
``[a] [size] colour shape``; a position phrase (one of
:data:`~gaf.plugins.images.shapes.POSITIONS`) belongs to the first object; with two
objects a relation phrase (``to the left of``, ``left of``, ``to the right of``,
``right of``, ``above``, ``over``, ``below``, ``under``) is required, and with a
position it also places the second object. For every caption the dataset writes,
``parse_caption(caption(a, t)) == caption_attributes(a, t)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf.errors import BadConfig

from .shapes import (
    COLOURS, PALETTE, POSITIONS, RELATION_STEP, RELATIONS, RESOLUTIONS, SHAPES, SIZES,
    cell_centre, cell_size, centroid_offset, coverage, radius,
)

__all__ = ["ShapesEvaluator", "parse_caption"]

_FOREGROUND = 0.3  # coverage above which a pixel belongs to an object
_MIN_MASS = 0.4  # fraction of the smallest object's mass below which a blob is noise

# ---------------------------------------------------------------------- captions

_SYNONYMS = [(r"\bcent(?:er|re)\b", "middle"), (r"\bbig\b", "large"),
             (r"\b(?:little|tiny)\b", "small"), (r"\bcolou?r\b", "")]
_OBJECT_RE = re.compile(
    r"\b(?:(small|large)\s+)?(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")s?\b")
_POSITION_RE = re.compile(r"\b(" + "|".join(sorted(POSITIONS, key=len, reverse=True)) + r")\b")
_RELATION_RE = re.compile(r"\b(to the left of|left of|to the right of|right of|above|over|"
                          r"below|under(?:neath)?|beneath)\b")
_RELATION_WORDS = {"to the left of": "left of", "left of": "left of",
                   "to the right of": "right of", "right of": "right of",
                   "above": "above", "over": "above", "below": "below",
                   "under": "below", "underneath": "below", "beneath": "below"}


def parse_caption(text: str) -> dict[str, Any]:
    """The attributes that a ``shapes``-style caption states (see the module docstring).

    Returns ``{"colour", "shape", ["size"], ["position", "row", "col"], "second",
    "relation"}``; ``second`` is ``None`` or a dict with the same object keys.
    Raises ``ValueError`` for text with no object, more than two, or two without a
    relation.
    """
    t = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    for pattern, repl in _SYNONYMS:
        t = re.sub(pattern, repl, t)
    t = " ".join(t.split())
    objects = list(_OBJECT_RE.finditer(t))
    if not objects:
        raise ValueError(f"no '[size] colour shape' phrase in caption {text!r}")
    if len(objects) > 2:
        raise ValueError(f"more than two objects in caption {text!r}")
    parsed = []
    for m in objects:
        obj: dict[str, Any] = {"colour": m.group(2), "shape": m.group(3)}
        if m.group(1):
            obj["size"] = m.group(1)
        parsed.append(obj)
    # a position phrase may not sit inside an object phrase ("middle" is no colour)
    position = _POSITION_RE.search(t)
    if position:
        cell = POSITIONS.index(position.group(1))
        parsed[0].update(position=POSITIONS[cell], row=cell // 3, col=cell % 3)
    out = dict(parsed[0])
    out["second"], out["relation"] = None, None
    if len(parsed) == 2:
        between = t[objects[0].end():objects[1].start()]
        rel = _RELATION_RE.search(between) or _RELATION_RE.search(t)
        if rel is None:
            raise ValueError(f"two objects but no relation in caption {text!r}")
        relation = _RELATION_WORDS[rel.group(1)]
        second = parsed[1]
        if position:
            dr, dc = RELATION_STEP[relation]
            row, col = out["row"] + dr, out["col"] + dc
            if 0 <= row <= 2 and 0 <= col <= 2:
                second.update(position=POSITIONS[row * 3 + col], row=row, col=col)
        out["second"], out["relation"] = second, relation
    return out


# ---------------------------------------------------------------------- evaluator

_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float64)
_PALETTE_SQ = (_PALETTE ** 2).sum(1)
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


class ShapesEvaluator:
    """Reads ``shapes`` scenes from pixels and scores images against captions.

    ``ShapesEvaluator(resolution)``; :meth:`read` one image, :meth:`check` one image
    against one target, :meth:`score` a batch (see the module docstring).
    """

    def __init__(self, resolution: int = 32):
        if resolution not in RESOLUTIONS:
            raise BadConfig(f"shapes evaluator: resolution must be one of 16, 32, 64, "
                            f"got {resolution!r}")
        self.resolution = resolution
        self._cell = cell_size(resolution)
        grid = np.arange(resolution, dtype=np.float64) + 0.5
        self._xs, self._ys = grid[None, :], grid[:, None]
        smallest = min(
            coverage(s, radius("small", resolution), *cell_centre(1, 1, resolution),
                     self._xs, self._ys).sum() for s in SHAPES)
        self.min_mass = _MIN_MASS * float(smallest)
        self._margin = int(np.ceil(radius("large", resolution))) + 2

    # ------------------------------------------------------------------ reading

    def read(self, image: Tensor | np.ndarray) -> dict[str, Any]:
        """The scene in one ``(3, R, R)`` image in [-1, 1].

        Returns ``{"objects": [...]}`` (each object: colour, shape, size, position,
        row, col, mass, centre ``(x, y)`` in pixels; heaviest first) and, when an
        object was found, the scene in the dataset's attribute format built from the
        two heaviest objects (``colour`` … ``col``, ``second``, ``relation``).
        """
        objects = self._objects(self._pixels(image))
        out: dict[str, Any] = {"objects": objects}
        if objects:
            out.update({k: objects[0][k] for k in
                        ("colour", "shape", "size", "position", "row", "col")})
            out["second"], out["relation"] = None, None
            if len(objects) > 1:
                out["second"] = {k: objects[1][k] for k in
                                 ("colour", "shape", "size", "position", "row", "col")}
                out["relation"] = _relation(objects[0], objects[1])
        return out

    def check(self, image: Tensor | np.ndarray,
              target: str | dict[str, Any]) -> dict[str, Any]:
        """Correctness of one image against one caption or attribute dict: only the
        stated attributes; ``colour``, ``shape``, ``size``, ``position`` map to one
        bool per target object, ``relation``, ``count`` and ``exact`` to one bool."""
        return self._check(self._objects(self._pixels(image)), _target(target))

    def score(self, images: Tensor | Sequence[Tensor],
              targets: Sequence[str | dict[str, Any]]) -> dict[str, float]:
        """Accuracies of ``images`` ``(B, 3, R, R)`` against ``targets`` (captions or
        attribute dicts): colour, shape, size, position, relation, count, exact, n."""
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        totals: dict[str, list[int]] = {}
        for image, target in zip(images, targets):
            for key, ok in self.check(image, target).items():
                if isinstance(ok, list):
                    for v in ok:
                        totals.setdefault(key, []).append(int(v))
                else:
                    totals.setdefault(key, []).append(int(ok))
        out = {k: float(np.mean(v)) for k, v in totals.items() if v}
        out["n"] = float(len(targets))
        return out

    # ------------------------------------------------------------------ internals

    def _pixels(self, image: Tensor | np.ndarray) -> np.ndarray:
        if isinstance(image, Tensor):
            image = image.detach().to("cpu", torch.float64).numpy()
        arr = np.asarray(image, dtype=np.float64)
        r = self.resolution
        if arr.shape != (3, r, r):
            raise ValueError(f"expected a (3, {r}, {r}) image, got shape {arr.shape}")
        return (np.nan_to_num(arr) + 1.0) / 2.0

    def _objects(self, img: np.ndarray) -> list[dict[str, Any]]:
        r = self.resolution
        pix = img.reshape(3, -1).T  # (N, 3)
        dots = pix @ _PALETTE.T  # (N, 6)
        resid = (pix ** 2).sum(1, keepdims=True) - dots ** 2 / _PALETTE_SQ
        resid = np.where(dots > 0, resid, np.inf)
        label = resid.argmin(1)
        alpha = np.clip(dots[np.arange(len(label)), label] / _PALETTE_SQ[label], 0.0, 1.0)
        label, alpha = label.reshape(r, r), alpha.reshape(r, r)
        fg = alpha >= _FOREGROUND
        comp = _components(fg, label)
        objects = []
        for cid, (colour, pixels) in enumerate(comp):
            obj = self._analyse(cid, colour, pixels, comp, label, alpha, fg)
            if obj is not None:
                objects.append(obj)
        objects.sort(key=lambda o: -o["mass"])
        return objects

    def _analyse(self, cid, colour, pixels, comps, label, alpha, fg):
        r, m = self.resolution, self._margin
        ys_, xs_ = zip(*pixels)
        y0, y1 = max(min(ys_) - m, 0), min(max(ys_) + m + 1, r)
        x0, x1 = max(min(xs_) - m, 0), min(max(xs_) + m + 1, r)
        same = label[y0:y1, x0:x1] == colour
        mine = np.zeros((y1 - y0, x1 - x0), bool)
        for y, x in pixels:
            mine[y - y0, x - x0] = True
        keep = same & (mine | ~fg[y0:y1, x0:x1])  # faint edges, not other objects
        obs = np.where(keep, alpha[y0:y1, x0:x1], 0.0)
        mass = float(obs.sum())
        if mass < self.min_mass:
            return None
        xs, ys = self._xs[:, x0:x1], self._ys[y0:y1, :]
        cx, cy = float((obs * xs).sum() / mass), float((obs * ys).sum() / mass)
        best = None
        for shape in SHAPES:
            for size in SIZES:
                rad = radius(size, r)
                ox, oy = centroid_offset(shape, rad)
                bx, by = cx - ox, cy - oy
                row = int(np.clip(by // self._cell, 0, 2))
                col = int(np.clip(bx // self._cell, 0, 2))
                for px, py in ((bx, by), cell_centre(row, col, r)):
                    err = float(((coverage(shape, rad, px, py, xs, ys) - obs) ** 2).sum())
                    if best is None or err < best[0]:
                        best = (err, shape, size, bx, by)
        _, shape, size, bx, by = best
        row = int(np.clip(by // self._cell, 0, 2))
        col = int(np.clip(bx // self._cell, 0, 2))
        return {"colour": COLOURS[colour], "shape": shape, "size": size,
                "position": POSITIONS[row * 3 + col], "row": row, "col": col,
                "mass": mass, "centre": (bx, by)}

    def _check(self, objects: list[dict[str, Any]], target: dict[str, Any]) -> dict[str, Any]:
        wanted = [target] + ([target["second"]] if target.get("second") else [])
        found: list[dict[str, Any] | None] = list(objects[:len(wanted)])
        found += [None] * (len(wanted) - len(found))
        orders = [found] if len(wanted) == 1 else [found, found[::-1]]
        best, best_hits = None, -1
        for order in orders:
            results = [_match(w, f) for w, f in zip(wanted, order)]
            hits = sum(sum(v for v in res.values()) for res in results)
            if hits > best_hits:
                best, best_hits, chosen = results, hits, order
        out: dict[str, Any] = {}
        for key in ("colour", "shape", "size", "position"):
            vals = [res[key] for res in best if key in res]
            if vals:
                out[key] = vals
        if target.get("second") and target.get("relation"):
            a, b = chosen
            out["relation"] = (a is not None and b is not None
                               and _relation(a, b) == target["relation"])
        out["count"] = len(objects) == len(wanted)
        flat = [v for vals in out.values() for v in (vals if isinstance(vals, list) else [vals])]
        out["exact"] = all(flat)
        return out


def _target(target: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(target, str):
        return parse_caption(target)
    if not isinstance(target, dict) or "colour" not in target or "shape" not in target:
        raise ValueError(f"a target is a caption or an attributes dict, got {target!r}")
    return target


def _match(want: dict[str, Any], got: dict[str, Any] | None) -> dict[str, bool]:
    out = {}
    for key in ("colour", "shape", "size"):
        if want.get(key) is not None:
            out[key] = got is not None and got[key] == want[key]
    if want.get("row") is not None or want.get("position") is not None:
        if want.get("row") is not None:
            cell = (int(want["row"]), int(want["col"]))
        else:
            idx = POSITIONS.index(want["position"])
            cell = (idx // 3, idx % 3)
        out["position"] = got is not None and (got["row"], got["col"]) == cell
    return out


def _relation(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How ``a`` lies relative to ``b`` along the dominant axis."""
    dx = b["centre"][0] - a["centre"][0]
    dy = b["centre"][1] - a["centre"][1]
    if abs(dx) > abs(dy):
        return RELATIONS[0] if dx > 0 else RELATIONS[1]
    return RELATIONS[2] if dy > 0 else RELATIONS[3]


def _components(fg: np.ndarray, label: np.ndarray) -> list[tuple[int, list[tuple[int, int]]]]:
    """8-connected components of same-label foreground pixels: [(label, pixels)]."""
    h, w = fg.shape
    seen = np.zeros_like(fg)
    out = []
    for y0, x0 in zip(*np.nonzero(fg)):
        if seen[y0, x0]:
            continue
        colour = label[y0, x0]
        seen[y0, x0] = True
        stack, pixels = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for dy, dx in _NEIGHBOURS:
                ny, nx = y + dy, x + dx
                if (0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]
                        and label[ny, nx] == colour):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append((int(colour), pixels))
    return out
