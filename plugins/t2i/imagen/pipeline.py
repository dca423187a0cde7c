"""The ``cascade`` pipeline: a base diffusion model, then super-resolution stages.

Imagen's sampler (Saharia et al. 2022; DeepFloyd IF's stages I and II): the first stage
samples a small image from the caption; each later stage samples a larger image
conditioned on the caption and on the previous stage's output, upsampled to its size and
concatenated to ``x_t`` on channels. Any number of stages chain; each has its own noise
model, conditioner, scheduler and sample shape (:class:`CascadeStage`)::

    from gaf.plugins.t2i.imagen.pipeline import CascadePipeline

    pipe = CascadePipeline.from_run("runs/2026-12-06-imagen-1a2b3c")
    images = pipe(["a red circle above a blue square"] * 4, seed=0)      # (4, 3, 32, 32)
    base, final = pipe.sample_stages(["a red circle above a blue square"], seed=0)

or ``gaf sample --pipeline RUN_DIR --prompt "…" --out grid.png --stages`` (``--stages``
also writes each stage's own grid, ``grid_stage1.png`` …).

Per stage ``k`` (the loop of :class:`~..diffusion_pipeline.DiffusionPipeline` for each):

1. the captions are encoded by the stage's conditioner (its unconditional context is
   that conditioner's ``null``);
2. for ``k > 0``, the previous stage's images ``y`` (in ``[-1, 1]``) are upsampled to the
   stage's size (``upsample``, bilinear by default) and noised to the level ``a``
   (``aug_level``) with :func:`~gaf.plugins.diffusion.augmentation.noise_augment`, the
   noise drawn from each image's own generator; the result is the stage's ``concat``
   input at every step and ``a`` its ``noise_level`` (the noise-conditioning
   augmentation the stage was trained with at ``a ~ U[0, 1]``);
3. the denoising loop with classifier-free guidance at the stage's scale (``guidance``
   for the base, ``sr_guidance`` for every later stage), and x̂0 thresholded as
   ``thresholding`` (the base) or ``sr_thresholding`` (the later stages) says:
   ``none`` (the default, chosen on validation), ``static`` (clip to [-1, 1], DDPM's
   ``clip_sample``) or
   ``dynamic`` (Imagen's: ``s = max(1, percentile_p |x̂0|)``, ``x̂0 ← clip(x̂0, −s, s) /
   s`` per image, ``p = threshold_percentile``; the schedulers' ``thresholding`` with
   ``dynamic_thresholding_ratio = p`` and ``sample_max_value = threshold_max``, no upper
   bound by default, as Imagen). Dynamic thresholding divides saturated pixels by
   ``s > 1`` at every step: on images whose background sits at −1 (``shapes``) it
   washes them out unless guidance pushes ``x̂0`` far outside [-1, 1]
   (docs/results.md § Imagen).

Image ``i`` draws all its noise, stage after stage, from one generator seeded
``seed + i``: its base image is the one the base stage alone makes with that seed, and
nothing depends on the batch. The result is clamped to ``[-1, 1]``.

A run directory
---------------
``RUN_DIR/pipeline.json`` (written by the ``imagen`` objective) lists the stages, each
with what :func:`~..diffusion_pipeline.load_parts` reads for a ``diffusion`` run (its
modules and EMA copies, a fixed conditioner by its options, the first stage, the
training scheduler, the sample shape), the module directories relative to the run
(``super_resolution/noise_model_ema`` …), and for a later stage ``upsample``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, BadData

from ...diffusion.augmentation import noise_augment
from ..diffusion_pipeline import call_inputs, denoise, initial_sample, per_sample_noise
from ..run_meta import RunMeta, field, read_meta

__all__ = ["CascadeOptions", "CascadePipeline", "CascadeStage", "UPSAMPLE_MODES",
           "load_stage", "run_stage", "thresholded_scheduler", "upsample"]

UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest")


@attrs.define
class CascadeStage:
    """One stage: a noise model, its conditioner (or None), a scheduler, the ``(C, H, W)``
    it samples, and for a stage after the first how the previous output is upsampled."""

    noise_model: Any
    scheduler: Any
    sample_shape: tuple[int, ...]
    conditioner: Any = None
    upsample: str = "bilinear"

    @property
    def conditional_on_image(self) -> bool:
        return bool(getattr(getattr(self.noise_model, "config", None), "concat_channels", 0))


@attrs.define
class CascadeOptions:
    """The call options of :class:`CascadePipeline`."""

    steps: int = option(50, "denoising steps of the base stage", ge=1)
    guidance: float = option(3.0, "classifier-free guidance scale of the base stage "
                                  "(1 = none)", ge=0)
    sr_steps: int = option(25, "denoising steps of every super-resolution stage", ge=1)
    sr_guidance: float = option(1.0, "guidance scale of every super-resolution stage", ge=0)
    aug_level: float = option(0.25, "noise-augmentation level a of the low-resolution "
                                    "input of every super-resolution stage (0 = trust it, "
                                    "1 = ignore it)", ge=0, le=1)
    thresholding: Literal["none", "static", "dynamic"] = option(
        "none", "x0 thresholding at every step of the base stage: none, static (clip to "
                "[-1, 1]) or dynamic (Imagen's percentile threshold)")
    sr_thresholding: Literal["none", "static", "dynamic"] = option(
        "none", "x0 thresholding of every super-resolution stage")
    threshold_percentile: float = option(0.995, "the percentile p of |x0| that sets the "
                                                "dynamic threshold", gt=0, le=1)
    threshold_max: float = option(1e6, "upper bound of the dynamic threshold (diffusers' "
                                       "sample_max_value; Imagen has none, DeepFloyd IF "
                                       "uses 1.5)", ge=1)


def thresholded_scheduler(sched: Any, opts: CascadeOptions, mode: str | None = None) -> Any:
    """``sched`` rebuilt ``from_config`` with the thresholding ``mode`` (default
    ``opts.thresholding``) and ``opts``' percentile and bound."""
    mode = mode or opts.thresholding
    return type(sched).from_config(
        sched.config, clip_sample=mode == "static", thresholding=mode == "dynamic",
        dynamic_thresholding_ratio=opts.threshold_percentile,
        sample_max_value=opts.threshold_max)


def upsample(images: Tensor, shape: Sequence[int], mode: str) -> Tensor:
    """``images`` resized to the ``(H, W)`` of ``shape`` (``(C, H, W)``) with ``mode``."""
    size = tuple(int(n) for n in shape[-2:])
    if tuple(images.shape[-2:]) == size:
        return images
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(images, size=size, mode=mode, **kwargs)


def run_stage(stage: CascadeStage, conditions: list[Any], generators: list[torch.Generator],
              opts: CascadeOptions, *, steps: int, guidance: float, device: Any,
              previous: Tensor | None = None, option: str = "steps",
              thresholding: str | None = None, progress: bool = False) -> Tensor:
    """One stage's images in ``[-1, 1]`` (steps 1 to 3 of the module doc): from the
    captions alone, or, with ``previous`` images, conditioned on them upsampled and
    noised to ``opts.aug_level`` (the noise from each image's generator); x̂0 thresholded
    as ``thresholding`` says (default ``opts.thresholding``)."""
    sched = thresholded_scheduler(stage.scheduler, opts, thresholding)
    model = stage.noise_model
    x = initial_sample(sched, steps, stage.sample_shape, generators, device, option=option)
    context, guided = None, False
    if stage.conditioner is not None:
        cond = stage.conditioner(conditions)
        guided = guidance != 1.0
        context = (torch.cat([stage.conditioner.null(len(conditions)).to(cond), cond])
                   if guided else cond)
        if hasattr(model, "cache_context"):
            context = model.cache_context(context)
    kwargs: dict[str, Any] = {}
    if previous is not None:
        up = upsample(previous.to(device), stage.sample_shape, stage.upsample)
        noise = per_sample_noise(up.shape[1:], generators, device, up.dtype)
        concat = noise_augment(up, opts.aug_level, noise)
        kwargs = {"concat": torch.cat([concat, concat]) if guided else concat,
                  "noise_level": float(opts.aug_level)}
    elif stage.conditional_on_image:
        raise BadConfig("this stage is conditioned on a low-resolution image: pass previous")
    x = denoise(model, sched, x, context, guidance=guidance, guided=guided,
                generators=generators, model_kwargs=kwargs, progress=progress)
    return x.clamp(-1, 1)


class CascadePipeline:
    """Base + super-resolution stages → images (see the module docstring).

    The registered pipeline ``cascade`` (:class:`gaf.interfaces.Pipeline`): load a run
    with :meth:`from_run`, call it with :attr:`Options`.
    """

    Options = CascadeOptions

    def __init__(self, stages: Sequence[CascadeStage]):
        self.stages = list(stages)
        if not self.stages:
            raise BadConfig("a cascade needs at least one stage")
        if self.stages[0].conditional_on_image:
            raise BadConfig("the first stage of a cascade takes no image (its noise model "
                            "has concat_channels > 0)")
        for k, stage in enumerate(self.stages[1:], 1):
            if not stage.conditional_on_image:
                raise BadConfig(f"stage {k} of the cascade must be conditioned on the previous "
                                f"stage's image (noise-model concat_channels > 0)")
            if stage.upsample not in UPSAMPLE_MODES:
                raise BadConfig(f"stage {k}: upsample must be one of {UPSAMPLE_MODES}, got "
                                f"{stage.upsample!r}")
        #: ``(C, H, W)`` of the final images
        self.sample_shape = tuple(self.stages[-1].sample_shape)

    @property
    def device(self) -> torch.device:
        try:
            return next(self.stages[0].noise_model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    # ------------------------------------------------------------- loading

    @classmethod
    def from_run(cls, run_dir: str | Path, *, scheduler: str | None = None,
                 scheduler_options: dict[str, Any] | None = None, ema: bool = True,
                 device: Any = "cpu", registry: Any = None) -> CascadePipeline:
        """Load the cascade of an ``imagen`` run (``RUN_DIR/pipeline.json``).

        ``scheduler`` names a registered scheduler every stage samples with (default:
        each stage's training scheduler), built ``from_config`` of that stage's training
        scheduler config plus ``scheduler_options``; ``ema=False`` takes the raw trained
        weights instead of their moving average."""
        meta = read_meta(run_dir, "cascade", "imagen")
        records = field(meta, "stages", list)
        if not records:
            raise meta.fail("stages", "expected at least one stage")
        stages = []
        for k, record in enumerate(records):
            if not isinstance(record, dict):
                raise meta.fail(f"stages[{k}]", f"expected an object, got {record!r}")
            stages.append(load_stage(record, meta.path, f"stages[{k}]", scheduler=scheduler,
                                     scheduler_options=scheduler_options, ema=ema,
                                     device=device, registry=registry))
        return cls(stages)

    # ------------------------------------------------------------ sampling

    def options(self, **options: Any) -> CascadeOptions:
        """:attr:`Options` with ``options`` applied (checked; an unknown name is a
        :class:`~gaf.errors.BadConfig` naming the known ones)."""
        from gaf.config import from_dict

        return from_dict(self.Options, options, where="pipeline cascade")

    def __call__(self, conditions: Sequence[Any], *, seed: int = 0,
                 generators: Sequence[torch.Generator] | None = None,
                 progress: bool = False, **options: Any) -> Tensor:
        """The final stage's images ``(B, C, H, W)`` in ``[-1, 1]``, one per condition."""
        return self.sample_stages(conditions, seed=seed, generators=generators,
                                  progress=progress, **options)[-1]

    @torch.inference_mode()
    def sample_stages(self, conditions: Sequence[Any], *, seed: int = 0,
                      generators: Sequence[torch.Generator] | None = None,
                      progress: bool = False, stages: int | None = None,
                      **options: Any) -> list[Tensor]:
        """Every stage's images, first to last (or the first ``stages`` of them), each
        ``(B, C, H_k, W_k)`` in ``[-1, 1]`` (see the module docstring)."""
        conditions, generators = call_inputs(conditions, seed, generators)
        opts = self.options(**options)
        last = len(self.stages) if stages is None else int(stages)
        if not 1 <= last <= len(self.stages):
            raise BadConfig(f"stages must be in [1, {len(self.stages)}], got {stages!r}")
        outputs: list[Tensor] = []
        for k, stage in enumerate(self.stages[:last]):
            steps, guidance = ((opts.steps, opts.guidance) if k == 0
                               else (opts.sr_steps, opts.sr_guidance))
            outputs.append(run_stage(stage, conditions, generators, opts, steps=steps,
                                     guidance=guidance, device=self.device,
                                     previous=outputs[-1] if outputs else None,
                                     option="steps" if k == 0 else "sr_steps",
                                     thresholding=(opts.thresholding if k == 0
                                                   else opts.sr_thresholding),
                                     progress=progress))
        return outputs

    def evaluations_per_image(self, **options: Any) -> float:
        """Network evaluations to make one image at ``options``: per stage, its steps ×2
        when guided (a conditioner and a scale ≠ 1), + 1 condition-encoder call when it
        has a conditioner; no decode (pixel space)."""
        opts = self.options(**options)
        total = 0
        for k, stage in enumerate(self.stages):
            steps, guidance = ((opts.steps, opts.guidance) if k == 0
                               else (opts.sr_steps, opts.sr_guidance))
            guided = stage.conditioner is not None and guidance != 1.0
            total += steps * (2 if guided else 1) + (stage.conditioner is not None)
        return float(total)

    def base(self) -> CascadePipeline:
        """The cascade's first stage alone (its images at the base resolution)."""
        return CascadePipeline(self.stages[:1])


def load_stage(record: dict[str, Any], path: Path, prefix: str, *, scheduler: str | None = None,
               scheduler_options: dict[str, Any] | None = None, ema: bool = True,
               device: Any = "cpu", registry: Any = None) -> CascadeStage:
    """The :class:`CascadeStage` of one stage record (module directories relative to
    ``path``'s directory; a damaged field is a :class:`BadData` naming ``path`` and
    ``prefix.field``), loaded with :meth:`CascadePipeline.from_run`'s options."""
    from ..diffusion_pipeline import load_parts

    stage_meta = _StageMeta(record, Path(path), prefix)
    parts = load_parts(stage_meta, scheduler=scheduler, scheduler_options=scheduler_options,
                       ema=ema, device=device, registry=registry)
    mode = field(stage_meta, "upsample", str, default="bilinear")
    if mode not in UPSAMPLE_MODES:
        raise stage_meta.fail("upsample", f"expected one of {UPSAMPLE_MODES}, got {mode!r}")
    return CascadeStage(parts["noise_model"], parts["scheduler"], tuple(parts["sample_shape"]),
                        parts["conditioner"], mode)


class _StageMeta(RunMeta):
    """One stage record of a cascade's ``pipeline.json``: the same checks as a
    ``diffusion`` run's file, every field named ``stages[k].field``."""

    def __init__(self, data: dict[str, Any], path: Path, prefix: str):
        super().__init__(data, path)
        self.prefix = prefix

    def fail(self, field: str, message: str) -> BadData:
        return BadData(message, path=str(self.path), field=f"{self.prefix}.{field}")
