"""The contract of what runs after a denoising step: the ``gaf_sample_step`` hook and a
sampler's ``callback(step, timestep, latents)``.

Each returns ``None`` (keep the latents) or replacement latents: a tensor of exactly the
latents' shape. :func:`replacement` applies that rule for every sampling loop
(:func:`gaf.plugins.t2i.diffusion_pipeline.denoise`, RePaint's
:func:`gaf.plugins.diffusion.repaint.repaint`); anything else is a
:class:`~gaf.errors.BadConfig` naming who returned it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gaf.errors import BadConfig

__all__ = ["replacement"]


def replacement(new: Any, x: Tensor, who: str) -> Tensor:
    """``x`` when ``new`` is None, else ``new`` checked to be a tensor of ``x``'s shape
    (``who`` names the hook or callback in the error)."""
    if new is None:
        return x
    if not isinstance(new, Tensor) or new.shape != x.shape:
        raise BadConfig(f"{who} returned {type(new).__name__} "
                        f"{tuple(getattr(new, 'shape', ()))}; expected None or a tensor "
                        f"of shape {tuple(x.shape)}")
    return new
