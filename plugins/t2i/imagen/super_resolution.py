"""``imagen-sr``: a text-conditioned super-resolution diffusion stage with
noise-conditioning augmentation (Imagen's and DeepFloyd IF's stage II).

``gaf run --objective imagen-sr --set conditioner.lm=TEXT_RUN`` trains, on the dataset's
images at their full size (32×32 for ``shapes``), a UNet that denoises the
high-resolution image given the caption and the low-resolution image (the ``imagen``
objective runs it as its stage in ``RUN_DIR/super_resolution/``).

Training pairs
--------------
Item ``i``'s high-resolution image ``x`` is the dataset's; its low-resolution image ``y``
is the same item at ``low_resolution`` (:func:`gaf.plugins.images.batches.dataset_at`:
``shapes`` renders the scene at that size, which is what the base stage learns and
makes; another dataset is area-downsampled). Both are read once, before the first step.

Loss
----
With ``t``, ``ε``, the dropped captions as in ``ldm`` (its module doc), a level
``a ~ U[0, 1]`` and noise ``ε_a ~ N(0, I)`` per image::

    c   = noise_augment(upsample(y), a, ε_a)      √ᾱ(a) up(y) + √(1 − ᾱ(a)) ε_a
    L   = mean ‖f_θ(x_t, t, τ(caption), concat=c, noise_level=a) − target‖²

(:mod:`gaf.plugins.diffusion.augmentation`; ``upsample`` bilinear by default, the
cascade pipeline's). The noise model must take the 3-channel ``concat`` and the
``noise_level`` (the default ``unet`` options of this objective: ``component_defaults``).
Every draw of step ``i`` comes from the run seed's ``"imagen-sr-noise"`` stream at the
micro-batch and the rank's first position (exact resumes).

A frozen conditioner's states are computed once per distinct caption before the first
step (:class:`FrozenStates`), not at every step.

Evaluation (:func:`.evaluation.super_resolution_figures`): the first ``eval_images`` items
of ``eval_split`` super-resolved from their real low-resolution images at each level of
``eval_aug_levels``: PSNR and SSIM against the real image, with the bicubic upsampling
as the baseline, and the attribute evaluator's exact-match rate at full size.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig
from gaf.runs import RunContext
from gaf.seeding import torch_generator

from ...diffusion.augmentation import noise_augment
from ...images.batches import dataset_at, stack_images
from ..ldm import LDM, LDMConfig
from .pipeline import upsample

__all__ = ["SuperResolution", "SuperResolutionConfig", "FrozenConditions", "FrozenStates",
           "SR_UNET", "PIXEL_SCHEDULE", "STAGE_FILE"]

#: the stage record an ``imagen-sr`` run writes for the cascade that includes it
STAGE_FILE = "stage.json"

#: the default noise model of a super-resolution stage: an efficient
#: UNet (more blocks at low resolution, skips scaled by 1/√2), attention only at the
#: lowest level, the
#: low-resolution image on 3 extra input channels, its noise level and the pooled text in
#: the time embedding
SR_UNET = {"channels": (32, 48, 64), "level_layers": (1, 1, 2), "skip_scale": 2 ** -0.5,
           "attention_levels": (2,), "heads": 4, "norm_groups": 16, "concat_channels": 3,
           "noise_level": True, "pooled_context": True}

#: both stages' default noise schedule: Stable Diffusion's ``scaled_linear`` betas
#: (0.00085 to 0.012), whose signal-to-noise ratio is above DDPM's ``linear`` at every
#: step, by a factor that grows from about 2 a quarter of the way into the chain to about
#: 18 three quarters in. ``shapes`` images are mostly background at exactly -1 (pixel std about a
#: quarter of the unit-variance latents ``ldm`` diffuses), so under ``linear`` their
#: content drowns early in the chain; on the validation split the base learned colour
#: and count markedly better with these (docs/results.md § Imagen).
PIXEL_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                  "beta_end": 0.012}


@attrs.define
class SuperResolutionConfig(LDMConfig):
    """Options of ``imagen-sr``: ``ldm``'s (the first-stage, FD and CLIP ones unused:
    this objective is pixel space and has its own evaluation) and its own."""

    low_resolution: int = option(16, "side of the low-resolution input (the base "
                                     "stage's output)", ge=1)
    upsample: Literal["bilinear", "bicubic", "nearest"] = option(
        "bilinear", "how the low-resolution image is upsampled before it is concatenated")
    eval_images: int = option(100, "eval items super-resolved (0 = no evaluation)", ge=0)
    eval_steps: int = option(25, "sampling steps of the evaluation", ge=1)
    fd_guidance: float = option(1.0, "guidance scale of the evaluation", ge=0)
    eval_aug_levels: tuple[float, ...] = option((0.0, 0.25, 0.5), "augmentation levels a "
                                                "evaluated", ge=0, le=1)
    thresholding: Literal["none", "static", "dynamic"] = option(
        "none", "x0 thresholding of the evaluation's sampling")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.eval_aug_levels = tuple(float(a) for a in self.eval_aug_levels)


class FrozenStates:
    """A frozen conditioner's states of every distinct caption of the training data,
    computed once; ``lookup(captions)`` gives theirs (a caption it has not seen is
    encoded then)."""

    def __init__(self, conditioner: Any, conditions: list[str], batch: int = 500):
        self.conditioner = conditioner
        unique = list(dict.fromkeys(conditions))
        self.row = {c: i for i, c in enumerate(unique)}
        with torch.no_grad():
            self.states = torch.cat([conditioner(unique[s:s + batch]).float()
                                     for s in range(0, len(unique), batch)])

    def lookup(self, captions: list[str]) -> Tensor:
        if all(c in self.row for c in captions):
            return self.states[torch.tensor([self.row[c] for c in captions])]
        with torch.no_grad():
            return self.conditioner(captions).float()


class FrozenConditions:
    """For an ``ldm`` subclass: a frozen conditioner's states are looked up
    (:class:`FrozenStates`, made by :meth:`freeze_conditions` in setup) instead of
    encoded at every step; a trained one encodes as ``ldm`` does."""

    frozen: FrozenStates | None = None

    def freeze_conditions(self) -> None:
        self.frozen = (None if self.conditioner.trainable
                       else FrozenStates(self.conditioner, self.conditions))

    def encode_conditions(self, conditions: list[Any]) -> Tensor:
        """The captions' states: looked up when the conditioner is frozen."""
        if self.frozen is not None:
            return self.frozen.lookup(conditions).to(self.device)
        return self.conditioner(conditions)


class SuperResolution(FrozenConditions, LDM):
    """Text-conditioned super-resolution with noise-conditioning augmentation."""

    Config = SuperResolutionConfig
    uses = {**LDM.uses, "conditioner": "lm-text", "autoencoder": "none"}
    component_defaults = {"noise-model": SR_UNET, "scheduler": PIXEL_SCHEDULE}
    timeline = None  # a stage, not a text-to-image method of the timeline
    train_defaults = {**LDM.train_defaults, "steps": 1000}

    def __init__(self, config: SuperResolutionConfig | None = None):
        self.config = config or SuperResolutionConfig()

    # ------------------------------------------------------------------ setup

    def _first_stage(self, ctx: RunContext) -> tuple[Any, str]:
        return pixel_space(ctx, "imagen-sr")

    def _check_shapes(self) -> None:
        super()._check_shapes()
        nm = getattr(self.noise_model, "config", None)
        want = {"concat_channels": self.noise_model.in_channels, "noise_level": True}
        wrong = {k: v for k, v in want.items() if getattr(nm, k, None) != v}
        if wrong:
            sets = " ".join(f"--set noise-model.{k}={str(v).lower()}" for k, v in wrong.items())
            raise BadConfig(f"imagen-sr needs a noise model that takes the low-resolution "
                            f"image and its noise level: {sets}")

    def _setup_more(self, ctx: RunContext) -> None:
        cfg = self.config
        low = dataset_at(ctx, cfg.low_resolution)
        self.lowres = stack_images(low, range(len(low))).to(self.device)
        if self.lowres.shape[-1] >= self.latents.shape[-1]:
            raise BadConfig(f"imagen-sr: low_resolution {cfg.low_resolution} must be below "
                            f"the dataset's {self.latents.shape[-1]}")
        self.freeze_conditions()
        ctx.log(f"imagen-sr: {self.lowres.shape[-1]} -> {self.latents.shape[-1]} px")

    def _write_pipeline_file(self, ctx: RunContext) -> None:
        """``RUN_DIR/stage.json``, this stage's record for the cascade that includes it
        (``ldm``'s ``pipeline.json`` fields and ``upsample``), not a ``pipeline.json``:
        the stage alone makes no image from a caption."""
        import json

        from gaf.atomic import atomic_write_text

        meta = {**self._pipeline_meta(ctx), "upsample": self.config.upsample}
        atomic_write_text(ctx.run_dir / STAGE_FILE, json.dumps(meta, indent=2) + "\n")

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = torch.as_tensor(self.order.slice(start, count))
        gen = torch_generator(self.seed, "imagen-sr-noise", index, start)
        T = self.scheduler.config.num_train_timesteps
        shape = self.sample_shape
        t = torch.randint(0, T, (count,), generator=gen)
        noise = torch.randn((count, *shape), generator=gen)
        drop = torch.rand(count, generator=gen) < self.config.p_uncond
        level = torch.rand(count, generator=gen)
        aug_noise = torch.randn((count, *shape), generator=gen)
        d = self.device
        return {"z0": self.latents[picks], "low": self.lowres[picks],
                "conditions": [self.conditions[int(i)] for i in picks], "t": t.to(d),
                "noise": noise.to(d), "drop": drop.to(d), "level": level.to(d),
                "aug_noise": aug_noise.to(d)}

    def context(self, batch: dict[str, Any]) -> Tensor:
        """The batch's caption states, the null context where ``drop``."""
        context = self.encode_conditions(batch["conditions"])
        null = self.conditioner.null(len(batch["drop"])).to(context)
        return torch.where(batch["drop"][:, None, None], null, context)

    # ------------------------------------------------------------------- loss

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        import torch.nn.functional as F

        x0, t, noise, drop = batch["z0"], batch["t"], batch["noise"], batch["drop"]
        sched = self.scheduler
        x_t = sched.add_noise(x0, noise, t)
        up = upsample(batch["low"], self.sample_shape, self.config.upsample)
        concat = noise_augment(up, batch["level"], batch["aug_noise"])
        out = self.noise_model(x_t, t, self.context(batch), concat=concat,
                               noise_level=batch["level"])
        target = sched.training_target(x0, noise, t)
        per_item = F.mse_loss(out.float(), target.float(), reduction="none").flatten(1).mean(1)
        metrics = {"dropped": float(drop.float().mean())}
        seen = per_item.detach()
        if (~drop).any():
            metrics["loss_cond"] = float(seen[~drop].mean())
        if drop.any():
            metrics["loss_uncond"] = float(seen[drop].mean())
        return per_item.mean(), metrics

    # ------------------------------------------------------------- evaluation

    def stage(self, ema: bool = True) -> Any:
        """This run's :class:`~.pipeline.CascadeStage` (EMA weights by default)."""
        import gaf

        from ..ldm import _plain
        from .pipeline import CascadeStage

        sched = gaf.REGISTRY.get("scheduler", self.config.eval_scheduler).from_config(
            _plain(self.scheduler.config))
        return CascadeStage(self.sampling_module("noise_model", ema), sched,
                            self.sample_shape, self.sampling_module("conditioner", ema),
                            self.config.upsample)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        from .evaluation import super_resolution_figures

        if self.config.eval_images == 0:
            return {}
        return super_resolution_figures(ctx, self, self.stage())


def pixel_space(ctx: RunContext, who: str) -> tuple[Any, str]:
    """The identity first stage; any other ``--autoencoder`` is a :class:`BadConfig`
    (Imagen's stages are pixel-space diffusion models)."""
    ae = ctx.component("autoencoder")
    if any(True for _ in ae.parameters()):
        raise BadConfig(f"{who} is pixel-space diffusion: use --autoencoder none (got "
                        f"{ctx.spec.components['autoencoder'].name!r})")
    return ae.eval(), ""

