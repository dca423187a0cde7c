"""mean-colour: a train-free text-to-image pipeline, as a third-party gaf plugin.

A pipeline (:class:`gaf.interfaces.Pipeline`) is built from a run directory with
``from_run``, declares its call options as an attrs ``Options`` class, returns images
``(B, C, H, W)`` in ``[-1, 1]`` with image ``i`` drawn from ``generators[i]`` alone,
and counts its network evaluations per image. This one is as small as that gets while
still being real:

* "training" is :func:`fit_colours`: the colour of a word is the mean colour of the
  training images whose caption names it (every pixel of those images counts once);
  :func:`write_run` writes a run directory: ``colours.json`` (the table) and
  ``pipeline.json`` naming the pipeline (``"pipeline": "mean-colour"``), which is how
  ``gaf sample --pipeline RUN_DIR`` finds it;
* sampling paints image ``i`` in the colour of the first word of its caption that the
  table knows (``background`` when none does; a class label ``3`` is the word ``"3"``),
  adds ``noise · N(0, 1)`` drawn from generator ``i`` and clamps to ``[-1, 1]``;
* it evaluates no network: ``evaluations_per_image`` is 0.

The entry point ``[project.entry-points."gaf.pipeline"] mean-colour = ...`` in
pyproject.toml registers it; nothing is imported until it is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import from_dict, option
from gaf.errors import BadConfig, BadData

__all__ = ["COLOURS_FILE", "MeanColourOptions", "MeanColourPipeline", "fit_colours",
           "words", "write_run"]

COLOURS_FILE = "colours.json"
NAME = "mean-colour"


@attrs.define
class MeanColourOptions:
    """The call options of ``mean-colour`` (``gaf sample --option noise=0.1``)."""

    noise: float = option(0.0, "std of the Gaussian noise added to every pixel, drawn from "
                               "the image's own generator", ge=0)


def words(condition: Any) -> list[str]:
    """The lower-case words of a caption (a label is one word: ``3`` -> ``["3"]``)."""
    return re.findall(r"[a-z0-9]+", str(condition).lower())


class MeanColourPipeline:
    """Paints each image in the colour its caption names, plus per-image noise."""

    Options = MeanColourOptions

    def __init__(self, colours: Mapping[str, Sequence[float]], *, resolution: int = 16,
                 background: Sequence[float] | None = None, device: Any = "cpu"):
        if not colours:
            raise BadConfig("mean-colour: the colour table is empty")
        self.colours = {str(w): torch.tensor([float(v) for v in c]) for w, c in colours.items()}
        sizes = {len(c) for c in self.colours.values()}
        if len(sizes) != 1:
            raise BadConfig(f"mean-colour: colours have different channel counts {sorted(sizes)}")
        self.channels = sizes.pop()
        self.background = (torch.zeros(self.channels) if background is None
                           else torch.tensor([float(v) for v in background]))
        if self.background.shape != (self.channels,):
            raise BadConfig(f"mean-colour: background needs {self.channels} channels")
        if resolution < 1:
            raise BadConfig(f"mean-colour: resolution must be >= 1, got {resolution}")
        self.resolution = int(resolution)
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run_dir: Any, *, device: Any = "cpu",
                 **load_options: Any) -> MeanColourPipeline:
        """Load ``RUN_DIR/colours.json`` (:func:`write_run`). There are no load options."""
        if load_options:
            raise BadConfig(f"pipeline {NAME} takes no load options, got "
                            f"{', '.join(sorted(load_options))}")
        path = Path(run_dir) / COLOURS_FILE
        if not path.is_file():
            raise BadConfig(f"{run_dir} is not a {NAME} run: it has no {COLOURS_FILE} "
                            f"(write one with gaf_noise_pipeline.write_run)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BadData(f"not valid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
        if not isinstance(data, dict) or not isinstance(data.get("colours"), dict):
            raise BadData("expected an object with a 'colours' table", path=str(path),
                          field="colours")
        return cls(data["colours"], resolution=data.get("resolution", 16),
                   background=data.get("background"), device=device)

    def options(self, **options: Any) -> MeanColourOptions:
        """``Options`` with ``options`` applied (an unknown name is a BadConfig)."""
        return from_dict(self.Options, options, where=f"pipeline {NAME}")

    def colour_of(self, condition: Any) -> Tensor:
        """The colour of the first word of ``condition`` in the table, else ``background``."""
        for word in words(condition):
            if word in self.colours:
                return self.colours[word]
        return self.background

    def __call__(self, conditions: Sequence[Any], *, generators: Sequence[Any] | None = None,
                 seed: int = 0, **options: Any) -> Tensor:
        """``(B, C, R, R)`` images in ``[-1, 1]``; image ``i`` uses ``generators[i]``
        (default: seeded ``seed + i``), so it does not depend on the batch."""
        opts = self.options(**options)
        conditions = list(conditions)
        if not conditions:
            raise BadConfig("nothing to sample: no prompts given")
        if generators is None:
            generators = [torch.Generator().manual_seed(seed + i) for i in range(len(conditions))]
        generators = list(generators)
        if len(generators) != len(conditions):
            raise BadConfig(f"{len(generators)} generators for {len(conditions)} conditions")
        shape = (self.channels, self.resolution, self.resolution)
        images = []
        for condition, generator in zip(conditions, generators):
            image = self.colour_of(condition)[:, None, None].expand(shape)
            if opts.noise > 0:
                noise = torch.randn(shape, generator=generator, device=generator.device)
                image = image + opts.noise * noise.cpu()
            images.append(image.clamp(-1, 1))
        return torch.stack(images).to(self.device)

    def evaluations_per_image(self, **options: Any) -> float:
        """0: a table look-up and a noise draw, no network."""
        self.options(**options)
        return 0.0


def fit_colours(images: Tensor, captions: Sequence[str],
                vocabulary: Sequence[str]) -> dict[str, list[float]]:
    """The "training": for each word of ``vocabulary`` named by some caption, the mean
    colour (per channel, over every pixel) of the images ``(N, C, H, W)`` whose caption
    names it. Words no caption names are left out."""
    if images.dim() != 4 or images.shape[0] != len(captions):
        raise BadConfig(f"fit_colours: {len(captions)} captions for images of shape "
                        f"{tuple(images.shape)} (expected (N, C, H, W))")
    per_image = images.double().mean(dim=(2, 3))
    named = [set(words(c)) for c in captions]
    table = {}
    for word in vocabulary:
        rows = [i for i, ws in enumerate(named) if word in ws]
        if rows:
            table[word] = per_image[rows].mean(dim=0).tolist()
    return table


def write_run(run_dir: Any, colours: Mapping[str, Sequence[float]], *, resolution: int = 16,
              background: Sequence[float] | None = None) -> Path:
    """Write a ``mean-colour`` run directory: ``colours.json`` and a ``pipeline.json``
    that names the pipeline (what ``gaf sample --pipeline`` reads)."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    data = {"colours": {w: [float(v) for v in c] for w, c in colours.items()},
            "resolution": int(resolution)}
    if background is not None:
        data["background"] = [float(v) for v in background]
    (root / COLOURS_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (root / "pipeline.json").write_text(json.dumps({"format_version": 1, "pipeline": NAME},
                                                   indent=2) + "\n", encoding="utf-8")
    return root
