"""The ``image-to-image`` pipeline: a trained SR3 / Palette model applied to pictures.

::

    from gaf.plugins.t2i.image_to_image.pipeline import ImageToImagePipeline

    pipe = ImageToImagePipeline.from_run("runs/2026-12-06-image-to-image-1a2b3c")
    out = pipe(["a red circle in the top left"], images=pictures, masks=holes, seed=0)

or ``gaf sample --pipeline RUN_DIR --image in.png [--mask mask.png] [--prompt "…"]
--out out.png``.

``images`` are the task's *source* (:mod:`.tasks`), ``(B, C_s, H_s, W_s)`` in [-1, 1]
of exactly :attr:`~ImageToImagePipeline.source_shape`: the low-resolution picture for
super-resolution, a grey (or colour: its luma is taken) picture for colourisation, the
picture with a hole for inpainting and uncropping, whose ``masks`` ``(B, 1, H, W)`` say
where (1 = generate; exact 0/1, neither empty nor full: :func:`.masks.check_masks`).
``conditions`` are captions, or ``None`` for none (the learned null context).

The sampling loop is the ``diffusion`` pipeline's (:func:`..diffusion_pipeline.denoise`):
per-image generators ``seed + i``, classifier-free guidance as one batched call (the
concat input stacked for both halves), then the ``gaf_sample_step`` hook and the
``callback``. For the mask tasks the known pixels are pasted into the sample before the
first step and after every step (Palette: the model always sees them clean) and into
the result, so the known pixels of the output are the input's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, BadData

from ..diffusion_pipeline import (_sample_hook, check_prediction, denoise, initial_sample,
                                  per_sample_generators)
from ..run_meta import field, read_meta
from .masks import check_masks, full_masks
from .tasks import MASK_TASKS, TASKS, condition, paste, source_shape

__all__ = ["ImageToImageOptions", "ImageToImagePipeline", "TaskSettings"]


@attrs.frozen
class TaskSettings:
    """What a run's model was trained to do (``pipeline.json``'s ``task``)."""

    name: str
    mask_kinds: tuple[str, ...] = ()
    low_resolution: int = 8
    grey_levels: int = 4
    upsample: str = "bicubic"

    @property
    def uses_masks(self) -> bool:
        return self.name in MASK_TASKS


@attrs.define
class ImageToImageOptions:
    """The call options of :class:`ImageToImagePipeline`."""

    steps: int = option(50, "denoising steps (the scheduler's timesteps)", ge=1)
    guidance: float = option(1.0, "classifier-free guidance scale of a captioned call "
                                  "(1 = the conditional prediction alone)", ge=0)


class ImageToImagePipeline:
    """A conditional diffusion model + its conditioner + a scheduler → images from
    pictures (see the module doc). The registered pipeline ``image-to-image``."""

    Options = ImageToImageOptions
    #: ``gaf sample`` needs ``--image``: there is nothing to sample from a prompt alone
    needs_image = True

    def __init__(self, noise_model: Any, scheduler: Any, *, conditioner: Any,
                 sample_shape: Sequence[int], task: TaskSettings):
        if task.name not in TASKS:
            raise BadConfig(f"unknown image-to-image task {task.name!r} (tasks: "
                            f"{', '.join(TASKS)})")
        check_prediction(noise_model, scheduler)
        self.noise_model = noise_model
        self.scheduler = scheduler
        self.conditioner = conditioner
        #: ``(C, H, W)`` of the images it makes
        self.sample_shape = tuple(int(n) for n in sample_shape)
        self.task = task

    @property
    def source_shape(self) -> tuple[int, ...]:
        """The ``(C, H, W)`` of the pictures it takes."""
        return source_shape(self.task.name, self.sample_shape,
                            low_resolution=self.task.low_resolution)

    #: for ``gaf sample --image``: the shape of the pictures read
    image_shape = source_shape

    @property
    def uses_masks(self) -> bool:
        """Whether it takes masks (inpainting, uncropping) or makes every pixel."""
        return self.task.uses_masks

    @property
    def device(self) -> torch.device:
        try:
            return next(self.noise_model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    # ------------------------------------------------------------- loading

    @classmethod
    def from_run(cls, run_dir: str | Path, *, scheduler: str | None = None,
                 scheduler_options: dict[str, Any] | None = None, ema: bool = True,
                 device: Any = "cpu", registry: Any = None) -> ImageToImagePipeline:
        """Load the pipeline of an ``image-to-image`` run (``RUN_DIR/pipeline.json``),
        with the ``diffusion`` pipeline's load options (``scheduler`` built
        ``from_config`` of the training scheduler, ``scheduler_options``, ``ema``)."""
        from ..diffusion_pipeline import load_parts

        meta = read_meta(run_dir, "image-to-image", "image-to-image")
        record = field(meta, "task", dict)
        name = record.get("name")
        if name not in TASKS:
            raise meta.fail("task.name", f"expected one of {', '.join(TASKS)}, got {name!r}")
        kinds = record.get("mask_kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise meta.fail("task.mask_kinds", f"expected a list of names, got {kinds!r}")
        numbers = {}
        for key in ("low_resolution", "grey_levels"):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise meta.fail(f"task.{key}", f"expected a non-negative integer, got {value!r}")
            numbers[key] = value
        mode = record.get("upsample")
        if mode not in ("bicubic", "bilinear", "nearest"):
            raise meta.fail("task.upsample", f"expected bicubic, bilinear or nearest, got "
                                             f"{mode!r}")
        parts = load_parts(meta, scheduler=scheduler, scheduler_options=scheduler_options,
                           ema=ema, device=device, registry=registry)
        task = TaskSettings(name, tuple(kinds), upsample=mode, **numbers)
        return cls(parts["noise_model"], parts["scheduler"], conditioner=parts["conditioner"],
                   sample_shape=parts["sample_shape"], task=task)

    # ------------------------------------------------------------ sampling

    def options(self, **options: Any) -> ImageToImageOptions:
        """:attr:`Options` with ``options`` applied (checked; an unknown name is a
        :class:`~gaf.errors.BadConfig` naming the known ones)."""
        from gaf.config import from_dict

        return from_dict(self.Options, options, where="pipeline image-to-image")

    def check_inputs(self, images: Any, masks: Any = None) -> tuple[Tensor, Tensor]:
        """``(images, masks)`` checked and as float32 on the pipeline's device; the masks
        of a task without masks are ones."""
        want = self.source_shape
        if not isinstance(images, Tensor) or images.dim() != 4 \
                or tuple(images.shape[1:]) != want:
            got = tuple(images.shape[1:]) if isinstance(images, Tensor) else type(images).__name__
            raise BadData(f"the {self.task.name} model takes {want[1]}x{want[2]} "
                          f"{_channels(want[0])} pictures (C, H, W = {want}), got {got}")
        images = images.float().to(self.device)
        if not bool(torch.isfinite(images).all()):
            raise BadData("the pictures hold non-finite values")
        if self.uses_masks:
            if masks is None:
                raise BadConfig(f"the {self.task.name} model needs a mask (white = "
                                f"generate): --mask")
            masks = check_masks(torch.as_tensor(masks), images).to(self.device)
        else:
            if masks is not None:
                raise BadConfig(f"the {self.task.name} model takes no mask: it makes every "
                                f"pixel")
            masks = full_masks(len(images), self.sample_shape[-2:]).to(self.device)
        return images, masks

    @torch.inference_mode()
    def __call__(self, conditions: Sequence[Any] | None, *, images: Tensor,
                 masks: Tensor | None = None, steps: int = 50, guidance: float = 1.0,
                 seed: int = 0, generators: Sequence[torch.Generator] | None = None,
                 callback: Any = None, progress: bool = False, hooks: bool = True) -> Tensor:
        """``(B, C, H, W)`` images in [-1, 1] from the source ``images`` (and ``masks``)
        and their captions (``conditions``; ``None`` = no caption), see the module doc."""
        opts = self.options(steps=steps, guidance=guidance)
        images, masks = self.check_inputs(images, masks)
        n = len(images)
        if conditions is not None:
            conditions = list(conditions)
            if len(conditions) != n:
                raise BadConfig(f"{len(conditions)} captions for {n} pictures")
        if generators is None:
            generators = per_sample_generators(seed, n)
        elif len(generators) != n:
            raise BadConfig(f"{len(generators)} generators for {n} pictures")
        device = self.device
        sched = self.scheduler
        concat = condition(self.task.name, images, masks, self.sample_shape,
                           upsample_mode=self.task.upsample, grey_levels=self.task.grey_levels)
        known = images if self.uses_masks else None
        x = initial_sample(sched, opts.steps, self.sample_shape, generators, device)
        if known is not None:
            x = paste(x, known, masks)
        null = self.conditioner.null(n).to(device) if self.conditioner is not None else None
        guided = conditions is not None and opts.guidance != 1.0
        if conditions is None or self.conditioner is None:
            context = null
        else:
            cond = self.conditioner(conditions)
            context = torch.cat([null.to(cond), cond]) if guided else cond
        if context is not None and hasattr(self.noise_model, "cache_context"):
            context = self.noise_model.cache_context(context)
        kwargs = {"concat": torch.cat([concat, concat]) if guided else concat}

        def step_end(step: int, t: int, sample: Tensor) -> Tensor | None:
            out = paste(sample, known, masks) if known is not None else None
            if callback is not None:
                replaced = callback(step, t, sample if out is None else out)
                out = replaced if replaced is not None else out
            return out

        x = denoise(self.noise_model, sched, x, context, guidance=opts.guidance,
                    guided=guided, generators=generators, model_kwargs=kwargs,
                    hook=_sample_hook() if hooks else None, callback=step_end,
                    progress=progress)
        x = x.clamp(-1, 1)
        return paste(x, known, masks) if known is not None else x

    def edit(self, images: Tensor, *, masks: Tensor | None = None,
             conditions: Sequence[Any] | None = None, seed: int = 0,
             generators: Sequence[torch.Generator] | None = None, progress: bool = False,
             **options: Any) -> Tensor:
        """``gaf sample --image [--mask]``'s entry: the same as calling the pipeline."""
        return self(conditions, images=images, masks=masks, seed=seed, generators=generators,
                    progress=progress, **options)

    def evaluations_per_image(self, **options: Any) -> float:
        """Denoiser calls (two per step when guided) + 1 condition-encoder call."""
        opts = self.options(**options)
        return float(opts.steps * (2 if opts.guidance != 1.0 else 1) + 1)


def _channels(c: int) -> str:
    return {1: "grey", 3: "RGB"}.get(c, f"{c}-channel")
