"""``image-to-image``: conditional image diffusion (SR3 / Palette): super-resolution,
inpainting, uncropping and colourisation, optionally guided by a caption.

``gaf run --objective image-to-image --set objective.task=inpainting`` trains, in one
run directory, a pixel-space UNet that denoises the dataset's images (32×32 for
``shapes``) given the task's condition, concatenated to ``x_t`` on channels
(:mod:`.tasks`: ``[c ; m]``, ``C + 1`` channels), and the caption through
cross-attention (the jointly trained ``text-transformer``, dropped with probability
``p_uncond`` so the same model also works without a caption: the colourisation
finding, that the caption resolves what the grey image cannot, is measured with the
caption against its learned null).

Loss (Saharia et al. 2022, Palette; with ``ldm``'s v-prediction and draws)
--------------------------------------------------------------------------
For a batch of images ``x`` with captions, ``t``, ``ε``, dropped captions as in ``ldm``
and, for the mask tasks, masks ``m`` of the task's kinds (:mod:`.masks`; ``m = 1``
elsewhere)::

    s   = degrade(x)                                   the task's source
    c   = [image(s) ; m]                               the concat input
    x_t = √ᾱ_t x + √(1−ᾱ_t) ε,   x̃_t = x_t·m + x·(1 − m)    (Palette: known pixels clean)
    L   = mean over images of  Σ m ‖f_θ(x̃_t, t, τ(caption), concat=c) − target‖² / (C Σ m)

(the mean over the generated pixels only; for super-resolution and colourisation
``m = 1`` and it is the plain MSE). Every draw of step ``i`` comes from the run seed's
``"image-to-image-noise"`` stream at the micro-batch and the rank's first position
(exact resumes). The scheduler is the pixel schedule of Imagen's stages
(``scaled_linear`` 0.00085–0.012, :data:`~..imagen.super_resolution.PIXEL_SCHEDULE`).

The run directory's ``pipeline.json`` names the ``image-to-image`` pipeline
(:mod:`.pipeline`) with the task's settings, so ``gaf sample --pipeline RUN_DIR
--image in.png [--mask mask.png] [--prompt …] --out out.png`` applies the model to a
picture. The evaluation is :func:`.evaluation.image_to_image_figures`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.config import option, option_error
from gaf.errors import BadConfig
from gaf.runs import RunContext
from gaf.seeding import torch_generator

from ..imagen.super_resolution import PIXEL_SCHEDULE, FrozenConditions, pixel_space
from ..ldm import LDM, LDMConfig
from .masks import MASK_KINDS, draw_masks, full_masks
from .tasks import DEFAULT_MASKS, MASK_TASKS, TASKS, condition, degrade, describe, paste

__all__ = ["ImageToImage", "ImageToImageConfig", "I2I_UNET", "masked_mse"]

#: the default noise model: a pixel UNet for 32×32 images, the condition on 4 extra input
#: channels (an RGB image and the mask), attention (and cross-attention to the caption)
#: at 8×8 and in the middle block
I2I_UNET = {"channels": (32, 48, 64), "attention_levels": (2,), "heads": 4,
            "norm_groups": 16, "concat_channels": 4}


@attrs.define
class ImageToImageConfig(LDMConfig):
    """Options of ``image-to-image``: ``ldm``'s (``first_stage_steps``, ``fd_guidance``'s
    FD/KID headline and the CLIP ones are unused: this objective is pixel space and has
    its own evaluation) and the task's."""

    task: Literal["super-resolution", "inpainting", "uncropping", "colourisation"] = option(
        "inpainting", "what the model learns: super-resolution, inpainting, uncropping or "
                      "colourisation")
    mask_kinds: tuple[str, ...] = option((), "mask kinds trained on and evaluated (empty = "
                                             "the task's: inpainting box, grid, stroke; "
                                             "uncropping half, quarter)")
    low_resolution: int = option(8, "super-resolution: side of the low-resolution input",
                                 ge=1)
    grey_levels: int = option(4, "colourisation: grey levels of the input (0 = continuous)",
                              ge=0)
    upsample: Literal["bicubic", "bilinear", "nearest"] = option(
        "bicubic", "super-resolution: how the low-resolution input is upsampled before it "
                   "is concatenated")
    eval_images: int = option(200, "eval items per evaluated setting (0 = no evaluation)",
                              ge=0)
    eval_steps: int = option(50, "sampling steps of the evaluation", ge=1)
    eval_scheduler: str = option(
        "ddpm", "scheduler of the evaluation's samples: ancestral ddpm, as SR3 and Palette "
                "sample and as gaf sample does by default (chosen on validation over "
                "deterministic ddim, whose flat regions keep a faint grain)")
    fd_guidance: float = option(1.0, "classifier-free guidance scale of the evaluation's "
                                     "captioned samples (1 = none)", ge=0)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.mask_kinds = tuple(str(k) for k in self.mask_kinds)
        for kind in self.mask_kinds:
            if kind not in MASK_KINDS:
                from gaf.errors import did_you_mean

                raise option_error("mask_kinds", f"unknown kind {kind!r}"
                                   f"{did_you_mean(kind, MASK_KINDS)} (kinds: "
                                   f"{', '.join(MASK_KINDS)})", self.mask_kinds)
        if self.task in MASK_TASKS:
            if not self.mask_kinds:
                self.mask_kinds = DEFAULT_MASKS[self.task]
        elif self.mask_kinds:
            raise option_error("mask_kinds", f"the {self.task} task takes no masks",
                               self.mask_kinds)
        if self.grey_levels == 1:
            raise option_error("grey_levels", "must be 0 (continuous) or at least 2",
                               self.grey_levels)


def masked_mse(out: Tensor, target: Tensor, masks: Tensor) -> Tensor:
    """Per image, the mean squared error over the pixels where ``masks`` is 1 (all
    channels): ``Σ m (out − target)² / (C Σ m)``, shape ``(B,)``."""
    err = F.mse_loss(out.float(), target.float(), reduction="none") * masks
    return err.flatten(1).sum(1) / (masks.flatten(1).sum(1) * out.shape[1])


class ImageToImage(FrozenConditions, LDM):
    """SR3 / Palette conditional diffusion (see the module doc)."""

    Config = ImageToImageConfig
    uses = {**LDM.uses, "autoencoder": "none"}
    component_defaults = {"noise-model": I2I_UNET, "scheduler": PIXEL_SCHEDULE}
    pipeline_name = "image-to-image"
    timeline = None  # an image-to-image task, not a text-to-image method
    train_defaults = {**LDM.train_defaults, "steps": 2000, "batch_size": 32}
    plot_keys = ("loss", "loss_cond", "loss_uncond", "lr", "grad_norm")

    def __init__(self, config: ImageToImageConfig | None = None):
        self.config = config or ImageToImageConfig()

    # ------------------------------------------------------------------ setup

    def _first_stage(self, ctx: RunContext) -> tuple[Any, str]:
        return pixel_space(ctx, "image-to-image")

    def _check_shapes(self) -> None:
        super()._check_shapes()
        nm = self.noise_model
        want = nm.in_channels + 1
        got = getattr(getattr(nm, "config", None), "concat_channels", None)
        if got != want:
            raise BadConfig(f"image-to-image concatenates the condition image and its mask "
                            f"({want} channels for {nm.in_channels}-channel images): set "
                            f"--set noise-model.concat_channels={want}")

    def _setup_more(self, ctx: RunContext) -> None:
        cfg = self.config
        side = self.latents.shape[-1]
        if cfg.task == "super-resolution" and not 1 <= cfg.low_resolution < side:
            raise BadConfig(f"image-to-image: low_resolution {cfg.low_resolution} must be "
                            f"below the images' {side} px")
        self.freeze_conditions()
        ctx.log(f"image-to-image: {describe(cfg.task, cfg)}, {side} px")

    def _pipeline_meta(self, ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        return {**super()._pipeline_meta(ctx),
                "task": {"name": cfg.task, "mask_kinds": list(cfg.mask_kinds),
                         "low_resolution": cfg.low_resolution,
                         "grey_levels": cfg.grey_levels, "upsample": cfg.upsample}}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = self.order.slice(start, count)
        gen = torch_generator(self.seed, "image-to-image-noise", index, start)
        T = self.scheduler.config.num_train_timesteps
        shape = self.sample_shape
        t = torch.randint(0, T, (count,), generator=gen)
        noise = torch.randn((count, *shape), generator=gen)
        drop = torch.rand(count, generator=gen) < self.config.p_uncond
        if self.config.task in MASK_TASKS:
            masks = draw_masks(self.config.mask_kinds, count, shape[-2:], gen)
        else:
            masks = full_masks(count, shape[-2:])
        d = self.device
        return {"z0": self.latents[picks], "conditions": [self.conditions[i] for i in picks],
                "t": t.to(d), "noise": noise.to(d), "drop": drop.to(d), "masks": masks.to(d)}

    def concat(self, images: Tensor, masks: Tensor) -> Tensor:
        """The model's concat input for clean ``images`` (their source, then
        :func:`.tasks.condition`)."""
        cfg = self.config
        source = degrade(cfg.task, images, low_resolution=cfg.low_resolution,
                         grey_levels=cfg.grey_levels)
        return condition(cfg.task, source, masks, self.sample_shape,
                         upsample_mode=cfg.upsample, grey_levels=cfg.grey_levels)

    # ------------------------------------------------------------------- loss

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        x0, t, noise, drop, masks = (batch[k] for k in ("z0", "t", "noise", "drop", "masks"))
        sched = self.scheduler
        x_t = paste(sched.add_noise(x0, noise, t), x0, masks)
        context = self.encode_conditions(batch["conditions"])
        null = self.conditioner.null(len(drop)).to(context)
        context = torch.where(drop[:, None, None], null, context)
        out = self.noise_model(x_t, t, context, concat=self.concat(x0, masks))
        per_item = masked_mse(out, sched.training_target(x0, noise, t), masks)
        metrics = {"dropped": float(drop.float().mean()),
                   "masked": float(masks.mean())}
        seen = per_item.detach()
        if (~drop).any():
            metrics["loss_cond"] = float(seen[~drop].mean())
        if drop.any():
            metrics["loss_uncond"] = float(seen[drop].mean())
        return per_item.mean(), metrics

    # ------------------------------------------------------------- evaluation

    def pipeline(self, scheduler: str | None = None, ema: bool = True) -> Any:
        """The :class:`~.pipeline.ImageToImagePipeline` over this run's (EMA) modules."""
        import gaf

        from ..ldm import _plain
        from .pipeline import ImageToImagePipeline, TaskSettings

        cfg = self.config
        name = scheduler or cfg.eval_scheduler
        sched = gaf.REGISTRY.get("scheduler", name).from_config(_plain(self.scheduler.config))
        task = TaskSettings(cfg.task, tuple(cfg.mask_kinds), cfg.low_resolution,
                            cfg.grey_levels, cfg.upsample)
        return ImageToImagePipeline(self.sampling_module("noise_model", ema), sched,
                                    conditioner=self.sampling_module("conditioner", ema),
                                    sample_shape=self.sample_shape, task=task)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        from .evaluation import image_to_image_figures

        if self.config.eval_images == 0:
            return {}
        return image_to_image_figures(ctx, self, self.pipeline())
