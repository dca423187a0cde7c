"""Sampling a trained text-conditional GAN: :class:`GANPipeline` (the ``gan`` pipeline).

One generator call per image: ``pipe(captions, seed=0)`` embeds the captions (the
frozen CLIP's unit embedding, or a jointly trained encoder's), draws ``z`` for image
``i`` from its own generator seeded ``seed + i`` (so an image does not depend on its
batch) and returns ``G(z, e)``, ``(B, C, H, W)`` in ``[-1, 1]``. The generator runs in
eval mode: its BatchNorm layers use their running statistics::

    from gaf.plugins.t2i.gan.pipeline import GANPipeline

    pipe = GANPipeline.from_run("runs/2026-12-06-gan-int-cls-1a2b3c")
    images = pipe(["a red circle above a blue square"] * 4, seed=0)

or ``gaf sample --pipeline RUN_DIR --prompt "…" --out grid.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig

from ..diffusion_pipeline import call_inputs, per_sample_noise
from .text import caption_embedder

__all__ = ["GANOptions", "GANPipeline"]


@attrs.define
class GANOptions:
    """The call options of :class:`GANPipeline` (one generator call an image: no steps or
    guidance to choose)."""

    z_scale: float = option(1.0, "standard deviation of the noise z (1 = as trained; "
                                 "below 1 trades diversity for fidelity)", gt=0)


class GANPipeline:
    """Generator + caption embedding → images (see the module docstring).

    The registered pipeline ``gan`` (:class:`gaf.interfaces.Pipeline`): load a run with
    :meth:`from_run` (load option ``ema``), call it with captions.
    """

    Options = GANOptions

    def __init__(self, generator: Any, conditioner: Any):
        self.generator = generator
        self.conditioner = conditioner
        self.embed = caption_embedder(conditioner)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, *, ema: bool = True, device: Any = "cpu",
                 registry: Any = None) -> GANPipeline:
        """Load the pipeline of a ``gan-int-cls`` run (``RUN_DIR/pipeline.json``);
        ``ema=False`` takes the trained generator instead of its moving average."""
        from gaf.components import create_or_load, load_from
        from gaf.registry import REGISTRY

        from ..run_meta import component_ref, module_dirs, read_meta

        registry = registry or REGISTRY
        meta = read_meta(run_dir, "gan", "gan-int-cls")
        dirs = module_dirs(meta, ema, required=("generator",))
        fixed = component_ref(meta, "conditioner")
        if "conditioner" not in dirs and fixed is None:
            raise meta.fail("conditioner", "missing: the run names no text encoder")
        generator = load_from(registry, "generator", dirs["generator"]).to(device).eval()
        if "conditioner" in dirs:
            conditioner = load_from(registry, "conditioner", dirs["conditioner"])
        else:
            conditioner = create_or_load(registry, "conditioner", fixed["name"],
                                         **fixed.get("options", {}))
        return cls(generator, conditioner.to(device).eval())

    def options(self, **options: Any) -> GANOptions:
        """:attr:`Options` from keyword options; an unknown one is a BadConfig."""
        unknown = sorted(set(options) - {"z_scale"})
        if unknown:
            raise BadConfig(f"the gan pipeline has no option {', '.join(unknown)} (its "
                            f"options: z_scale)")
        return GANOptions(**options)

    @torch.inference_mode()
    def __call__(self, conditions: Sequence[str], *, seed: int = 0,
                 generators: Sequence[torch.Generator] | None = None,
                 **options: Any) -> Tensor:
        """One image per caption; image ``i`` from ``generators[i]`` (default: seeded
        ``seed + i``)."""
        opts = self.options(**options)
        conditions, generators = call_inputs(conditions, seed, generators)
        z = per_sample_noise((self.generator.config.z_dim,), generators,
                             self.device) * opts.z_scale
        return self.generate(z, self.embed(conditions).to(self.device))

    @torch.inference_mode()
    def generate(self, z: Tensor, e: Tensor) -> Tensor:
        """``G(z, e)`` clamped to ``[-1, 1]``, in eval mode (noise and embeddings given:
        the interpolation figures use it)."""
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z, e).clamp(-1.0, 1.0)
        finally:
            self.generator.train(was)

    def evaluations_per_image(self, **options: Any) -> float:
        """One generator call and one caption-encoder call."""
        self.options(**options)
        return 2.0
