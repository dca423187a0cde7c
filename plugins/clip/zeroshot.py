"""Zero-shot reading with a CLIP model: which caption variant does an image match?

For a ``shapes``-style caption and one attribute of its **first** object (``colour``,
``shape``, ``size``, ``position``) or of the pair (``relation``),
:func:`caption_variants` gives the caption with that attribute replaced by each other
value it can take, everything else unchanged (the word or phrase is substituted in
place, so the template and the other object stay as they were)::

    "a small red circle above a blue square", "colour"
      -> "a small green circle above a blue square", … (5 variants: chance 1/6)

:func:`zero_shot_reading` scores, for each attribute, the fraction of images whose
own caption is more similar to them than every variant (argmax over the caption and
its variants), over the captions that state the attribute, beside its chance floor
``mean(1 / (1 + #variants))``. ``r_precision`` is the same with the variants of all
attributes together as the distractors (R = 1: the own caption must rank first).

Chance floors: colour 1/6, shape 1/5, size 1/2, position 1/9, relation 1/4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..images.shapes import COLOURS, POSITIONS, RELATION_PHRASES, SHAPES, SIZES

__all__ = ["ATTRIBUTES", "caption_variants", "zero_shot_reading"]

ATTRIBUTES = ("colour", "shape", "size", "position", "relation")

_WORDS = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}
_OBJECT_RE = re.compile(r"\b(?:(" + "|".join(SIZES) + r")\s+)?(" + "|".join(COLOURS)
                        + r")\s+(" + "|".join(SHAPES) + r")\b")
_POSITION_RE = re.compile(r"\b(" + "|".join(sorted(POSITIONS, key=len, reverse=True)) + r")\b")
_RELATION_RE = re.compile(r"\b(to the left of|to the right of|above|below)\b")
_RELATION_OF = {phrase: name for name, phrase in RELATION_PHRASES.items()}


def caption_variants(caption: str, attribute: str) -> list[str]:
    """``caption`` with ``attribute`` of its first object (or its relation) replaced by
    each other value, in the order of the value lists; ``[]`` when the caption does
    not state it."""
    if attribute in _WORDS:
        values = _WORDS[attribute]
        obj = _OBJECT_RE.search(caption)  # the first object's phrase
        group = {"size": 1, "colour": 2, "shape": 3}[attribute]
        if obj is None or obj.group(group) is None:
            return []
        a, b = obj.span(group)
        return [caption[:a] + v + caption[b:] for v in values if v != obj.group(group)]
    elif attribute == "position":
        values = POSITIONS
        m = _POSITION_RE.search(caption)
    elif attribute == "relation":
        values = tuple(RELATION_PHRASES.values())
        m = _RELATION_RE.search(caption)
    else:
        raise ValueError(f"unknown attribute {attribute!r}; one of {ATTRIBUTES}")
    if m is None:
        return []
    a, b = m.span(1)
    return [caption[:a] + v + caption[b:] for v in values if v != m.group(1)]


@torch.no_grad()
def zero_shot_reading(model: Any, images: Tensor, captions: Sequence[str], *,
                      batch_size: int = 512) -> dict[str, float]:
    """``{attr}``, ``{attr}_floor``, ``{attr}_n`` for each of :data:`ATTRIBUTES`, and
    ``r_precision`` (``_floor``, ``_n``), for ``images`` against their ``captions``
    (see the module docstring). ``model`` has ``encode_image`` and ``encode_text``."""
    img = F.normalize(model.encode_image(images), dim=-1)
    groups = {a: [caption_variants(c, a) for c in captions] for a in ATTRIBUTES}
    texts: list[str] = list(captions)
    for a in ATTRIBUTES:
        for vs in groups[a]:
            texts.extend(vs)
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    feats = torch.cat([model.encode_text(unique[s:s + batch_size])
                       for s in range(0, len(unique), batch_size)])
    sims = img @ F.normalize(feats, dim=-1).T  # (N images, unique texts)
    out: dict[str, float] = {}
    every: list[list[str]] = [[] for _ in captions]
    for a in ATTRIBUTES:
        right, floor, n = 0, 0.0, 0
        for i, (c, vs) in enumerate(zip(captions, groups[a])):
            if not vs:
                continue
            every[i].extend(vs)
            own = sims[i, index[c]]
            others = sims[i, [index[v] for v in vs]]
            right += int(bool((own > others).all()))
            floor += 1.0 / (1 + len(vs))
            n += 1
        if n:
            out[a], out[f"{a}_floor"], out[f"{a}_n"] = right / n, floor / n, float(n)
    right, floor, n = 0, 0.0, 0
    for i, (c, vs) in enumerate(zip(captions, every)):
        if not vs:
            continue
        own = sims[i, index[c]]
        right += int(bool((own > sims[i, [index[v] for v in vs]]).all()))
        floor += 1.0 / (1 + len(vs))
        n += 1
    if n:
        out["r_precision"], out["r_precision_floor"], out["r_precision_n"] = (
            right / n, floor / n, float(n))
    return out
