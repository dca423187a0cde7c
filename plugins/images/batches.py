"""Image tensors from a run's dataset: a stacked batch, and the dataset's other splits.

Used by every objective and evaluation that reads images (the autoencoders, latent
diffusion, the samplers' examples), so they live with the image datasets rather than
inside one objective.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gaf.config import field_names
from gaf.runs import RunContext

__all__ = ["stack_images", "split_dataset", "dataset_at", "Resized"]


def stack_images(dataset: Any, indices: Any) -> Tensor:
    """``torch.stack`` of ``dataset[i]["image"]`` (float32) for ``i`` in ``indices``."""
    return torch.stack([torch.as_tensor(dataset[int(i)]["image"], dtype=torch.float32)
                        for i in indices])


def split_dataset(ctx: RunContext, split: str) -> Any:
    """The run's dataset rebuilt with ``split=split`` (same options), or ``None`` when
    the dataset has no ``split`` option (or was loaded from a path)."""
    comp = ctx.spec.components.get("dataset")
    if comp is None or ctx.registry.is_path("dataset", comp.name):
        return None
    cls = ctx.registry.config_class("dataset", comp.name)
    if cls is None or "split" not in field_names(cls):
        return None
    return ctx.registry.create("dataset", comp.name, **{**comp.options, "split": split})


def dataset_at(ctx: RunContext, resolution: int, split: str | None = None) -> Any:
    """The run's dataset (its ``split``, or the run's own when None) with images of side
    ``resolution``: rebuilt with ``resolution=`` when the dataset has that option (the
    ``shapes`` renderer draws each scene at any size: what its evaluator reads
    exactly), else the dataset (:func:`split_dataset` for a ``split``) seen through
    :class:`Resized`. ``None`` when the dataset has no such split."""
    comp = ctx.spec.components["dataset"]
    if not ctx.registry.is_path("dataset", comp.name):
        cls = ctx.registry.config_class("dataset", comp.name)
        names = field_names(cls) if cls is not None else []
        if "resolution" in names and (split is None or "split" in names):
            options = {**comp.options, "resolution": resolution}
            if split is not None:
                options["split"] = split
            return ctx.registry.create("dataset", comp.name, **options)
    base = ctx.component("dataset") if split is None else split_dataset(ctx, split)
    return None if base is None else Resized(base, resolution)


class Resized:
    """A dataset whose images are resized to ``resolution`` × ``resolution`` (area
    averaging down, bicubic up, clamped to [-1, 1]) on access; everything else (length,
    captions, labels) is the wrapped dataset's. It has no evaluator: one that reads the
    original size would not read these."""

    def __init__(self, dataset: Any, resolution: int):
        self.dataset, self.resolution = dataset, int(resolution)
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch.nn.functional as F

        item = dict(self.dataset[index])
        image = torch.as_tensor(item["image"], dtype=torch.float32)
        if image.shape[-1] != self.resolution or image.shape[-2] != self.resolution:
            size = (self.resolution, self.resolution)
            mode = "area" if image.shape[-1] > self.resolution else "bicubic"
            image = F.interpolate(image[None], size=size, mode=mode)[0].clamp(-1, 1)
        item["image"] = image
        return item

    def __getattr__(self, name: str) -> Any:
        if name in ("evaluator", "dataset", "resolution") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
