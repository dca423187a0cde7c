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

__all__ = ["stack_images", "split_dataset"]


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
