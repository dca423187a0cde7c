"""``imagen``: Imagen (Saharia et al. 2022) in miniature, a frozen text-only language
model, a pixel-space base diffusion model and a super-resolution stage.

``gaf run --objective imagen --dataset shapes`` trains, in one run directory:

1. **the text encoder** (:func:`.stages.text_encoder_stage`): a GPT-2 trained with
   ``sft`` on the training captions alone in ``RUN_DIR/text_encoder/``, then frozen as
   the ``lm-text`` conditioner (``--set conditioner.lm=RUN_DIR`` names a trained one;
   ``--conditioner clip-text`` or ``text-transformer`` are the encoder ablation's other
   arms: a frozen CLIP text tower, or an encoder trained jointly with the base model);
2. **the super-resolution stage** (``objective.sr_steps`` > 0): the ``imagen-sr``
   objective (:mod:`.super_resolution`) as a run of its own in
   ``RUN_DIR/super_resolution/``, base resolution → the dataset's, with the same
   conditioner, noise-conditioning augmentation ``a ~ U[0, 1]``;
3. **the base model**, this run's own training steps: the ``ldm`` loss (its module doc)
   in pixel space on the dataset's images at ``base_resolution`` (16 for ``shapes``:
   :func:`gaf.plugins.images.batches.dataset_at` renders the scenes at that size),
   with ``scaled_linear`` betas (:data:`.super_resolution.PIXEL_SCHEDULE`, as the
   super-resolution stage) and an efficient UNet (``component_defaults``: more blocks at
   low resolution, skips scaled by 1/√2, attention at the two low levels) that takes the
   caption's states by cross-attention and their mean in its time embedding
   (``pooled_context``), caption
   dropout ``p_uncond`` for classifier-free guidance, and an EMA. A frozen
   conditioner's states are computed once per distinct caption;
4. **the evaluation** (:func:`.evaluation.imagen_figures`): the base alone at its
   resolution (``base_*``, with the guidance × thresholding sweep) and the whole
   cascade at full resolution (the headline, with the augmentation-level sweep), both
   with the shared text-to-image evaluation on unseen captions.

``RUN_DIR/pipeline.json`` names the ``cascade`` pipeline with both stages, so ``gaf
sample --pipeline RUN_DIR --prompt …`` runs the chain. With ``sr_steps = 0`` the run
trains and evaluates the base alone (a one-stage cascade; the encoder ablation's runs).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadData
from gaf.runs import RunContext

from ...images.batches import dataset_at, stack_images
from ..ldm import LDM, LDMConfig
from .super_resolution import PIXEL_SCHEDULE, STAGE_FILE, FrozenConditions, pixel_space

__all__ = ["Imagen", "ImagenConfig", "BASE_UNET", "SR_DIR"]

#: where the super-resolution stage is trained, inside the run directory
SR_DIR = "super_resolution"

#: the base model's default UNet: Imagen's efficient UNet in miniature (more ResBlocks at
#: the low resolutions, skips scaled by 1/√2), attention at 8×8 and 4×4, the pooled text
#: in the time embedding
BASE_UNET = {"channels": (32, 64, 128), "level_layers": (1, 2, 2), "skip_scale": 2 ** -0.5,
             "attention_levels": (1, 2), "heads": 4, "norm_groups": 16,
             "pooled_context": True}

THRESHOLDING = ("none", "static", "dynamic")


@attrs.define
class ImagenConfig(LDMConfig):
    """Options of ``imagen``: ``ldm``'s (for the base model; ``first_stage_steps`` is
    unused: Imagen is pixel space), the text encoder's, the super-resolution stage's and
    the cascade's evaluation."""

    base_resolution: int = option(16, "side of the base model's images", ge=4)
    text_encoder_steps: int = option(1500, "sft steps of the language model trained on "
                                           "the captions (lm-text without lm)", ge=1)
    text_encoder_layers: int = option(4, "its transformer blocks", ge=1)
    text_encoder_width: int = option(64, "its width (the noise models' context_dim)", ge=1)
    text_encoder_heads: int = option(4, "its attention heads", ge=1)
    clip_steps: int = option(1000, "steps of the CLIP trained first for clip-text without "
                                   "clip", ge=1)
    sr_steps: int = option(1000, "training steps of the super-resolution stage (0 = "
                                 "none: train and evaluate the base alone)", ge=0)
    eval_steps: int = option(25, "base sampling steps of the evaluation", ge=1)
    eval_guidance: tuple[float, ...] = option((1.0, 3.0, 6.0), "base guidance scales of "
                                              "the guidance x thresholding sweep", ge=0)
    eval_thresholding: tuple[str, ...] = option(THRESHOLDING, "thresholding modes of that "
                                                "sweep")
    fd_guidance: float = option(3.0, "the base's guidance scale of the headline rows", ge=0)
    thresholding: Literal["none", "static", "dynamic"] = option(
        "none", "the base's x0 thresholding in the headline rows (chosen on validation)")
    sr_thresholding: Literal["none", "static", "dynamic"] = option(
        "none", "the super-resolution stage's x0 thresholding in the evaluation")
    eval_sr_steps: int = option(25, "super-resolution sampling steps of the evaluation",
                                ge=1)
    eval_sr_guidance: float = option(1.0, "super-resolution guidance scale of the "
                                          "evaluation", ge=0)
    eval_aug_level: float = option(0.25, "noise-augmentation level of the headline row",
                                   ge=0, le=1)
    eval_aug_sweep: tuple[float, ...] = option((0.0, 0.1, 0.5, 0.9), "further "
                                               "augmentation levels evaluated", ge=0, le=1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.eval_aug_sweep = tuple(float(a) for a in self.eval_aug_sweep)
        self.eval_thresholding = tuple(str(m) for m in self.eval_thresholding)
        bad = [m for m in self.eval_thresholding if m not in THRESHOLDING]
        if bad:
            from gaf.config import option_error

            raise option_error("eval_thresholding", f"entries must be among {THRESHOLDING}",
                               self.eval_thresholding)


class Imagen(FrozenConditions, LDM):
    """The text encoder, the super-resolution stage and the base (see the module doc)."""

    Config = ImagenConfig
    uses = {**LDM.uses, "conditioner": "lm-text", "autoencoder": "none"}
    component_defaults = {"noise-model": BASE_UNET, "scheduler": PIXEL_SCHEDULE}
    pipeline_name = "cascade"
    timeline = {"year": 2022, "method": "Imagen (frozen LM, pixel cascade)",
                "paper": "Saharia et al., Photorealistic Text-to-Image Diffusion Models with "
                         "Deep Language Understanding (arXiv 2205.11487)"}
    train_defaults = {**LDM.train_defaults, "steps": 1200}

    def __init__(self, config: ImagenConfig | None = None):
        self.config = config or ImagenConfig()

    # ------------------------------------------------------------------ setup

    def _first_stage(self, ctx: RunContext) -> tuple[Any, str]:
        return pixel_space(ctx, "imagen")

    def _conditioner(self, ctx: RunContext) -> Any:
        from .stages import text_encoder_stage

        cfg = self.config
        cond, self.text_source = text_encoder_stage(
            ctx, self.dataset, steps=cfg.text_encoder_steps, layers=cfg.text_encoder_layers,
            width=cfg.text_encoder_width, heads=cfg.text_encoder_heads,
            clip_steps=cfg.clip_steps)
        return cond

    @torch.no_grad()
    def _encode_dataset(self, ctx: RunContext) -> Tensor:
        """The training images at ``base_resolution`` (pixel space: nothing to encode)."""
        self.base_dataset = dataset_at(ctx, self.config.base_resolution)
        images = stack_images(self.base_dataset, range(len(self.base_dataset)))
        if not torch.isfinite(images).all():
            raise BadData("the dataset has non-finite pixels")
        return images.to(self.device)

    def _setup_more(self, ctx: RunContext) -> None:
        self.freeze_conditions()
        self.sr_dir = ctx.run_dir / SR_DIR if self.config.sr_steps else None
        if self.sr_dir is not None:
            self._train_super_resolution(ctx)
        ctx.log(f"imagen: base {tuple(self.sample_shape)}, text encoder "
                f"{ctx.spec.components['conditioner'].name} ({self.text_source or 'named'}), "
                f"super-resolution {'in ' + SR_DIR if self.sr_dir else 'none'}")

    def _train_super_resolution(self, ctx: RunContext) -> None:
        """The ``imagen-sr`` stage in ``RUN_DIR/super_resolution`` (resumed when there)."""
        from gaf.launch import train_stage

        cfg = self.config
        if (self.sr_dir / STAGE_FILE).is_file() and (self.sr_dir / "noise_model").is_dir():
            return
        ctx.log(f"stage: training the super-resolution model ({cfg.sr_steps} steps) in "
                f"{self.sr_dir}")
        options = {"low_resolution": cfg.base_resolution, "p_uncond": cfg.p_uncond,
                   "ema_decay": cfg.ema_decay, "eval_split": cfg.eval_split,
                   "eval_steps": cfg.eval_sr_steps, "fd_guidance": cfg.eval_sr_guidance,
                   "eval_scheduler": cfg.eval_scheduler,
                   "thresholding": cfg.sr_thresholding}
        train_stage(ctx, self.sr_dir, "imagen-sr", ("dataset", "scheduler"),
                    {"steps": cfg.sr_steps},
                    components={"conditioner": self._conditioner_section(ctx),
                                "autoencoder": {"name": "none"},
                                "noise-model": {"name": "unet",
                                                "context_dim": self.conditioner.width},
                                "objective": options},
                    label="super-resolution stage")

    def _conditioner_section(self, ctx: RunContext) -> dict[str, Any]:
        """The conditioner of the super-resolution stage: this run's frozen one by its
        resolved options (a trained-here encoder by its path); a jointly trained one is
        trained anew with that stage."""
        comp = ctx.spec.components["conditioner"]
        cfg = getattr(self.conditioner, "config", None)
        options = ({k: v for k, v in attrs.asdict(cfg).items()} if attrs.has(type(cfg))
                   else dict(comp.options))
        return {"name": comp.name, **options}

    def _pipeline_meta(self, ctx: RunContext) -> dict[str, Any]:
        """``pipeline.json``: the ``cascade`` pipeline's stages, the base (``ldm``'s
        record of it) and the super-resolution stage's ``stage.json`` with its module
        directories made relative to this run."""
        base = super()._pipeline_meta(ctx)
        top = {k: base.pop(k) for k in ("format_version", "objective", "pipeline")}
        stages = [base]
        if self.sr_dir is not None:
            record = self._sr_record()
            for key in ("modules", "ema_modules"):
                if isinstance(record.get(key), dict):
                    record[key] = {k: f"{SR_DIR}/{v}" for k, v in record[key].items()}
            for key in ("format_version", "objective", "pipeline"):
                record.pop(key, None)
            stages.append(record)
        return {**top, "condition_key": base["condition_key"], "stages": stages}

    def _sr_record(self) -> dict[str, Any]:
        """The super-resolution stage's ``stage.json`` (a copy each call)."""
        path = self.sr_dir / STAGE_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadData(f"cannot read the super-resolution stage's record: {exc}",
                          path=str(path)) from None
        if not isinstance(record, dict):
            raise BadData("expected a JSON object", path=str(path))
        return record

    # ------------------------------------------------------------- evaluation

    def cascade(self, scheduler: str | None = None, ema: bool = True) -> Any:
        """The :class:`~.pipeline.CascadePipeline` of this run (EMA weights by default):
        the base stage from this objective, the super-resolution stage loaded from its
        directory."""
        import gaf

        from ..ldm import _plain
        from .pipeline import CascadePipeline, CascadeStage

        name = scheduler or self.config.eval_scheduler
        sched = gaf.REGISTRY.get("scheduler", name).from_config(_plain(self.scheduler.config))
        stages = [CascadeStage(self.sampling_module("noise_model", ema), sched,
                               self.sample_shape, self.sampling_module("conditioner", ema))]
        if self.sr_dir is not None:
            from .pipeline import load_stage

            stages.append(load_stage(self._sr_record(), self.sr_dir / STAGE_FILE, "stage",
                                     scheduler=name, ema=ema, device=self.device))
        return CascadePipeline(stages)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        from .evaluation import imagen_figures

        if self.config.eval_images == 0:
            return {}
        return imagen_figures(ctx, self, self.cascade())

    def evaluation_settings(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """``(options, sweep)`` of the base's evaluation: the headline (``fd_guidance``,
        ``thresholding``) and ``g{s}_{mode}`` for each guidance scale × thresholding mode."""
        cfg = self.config
        options = {"steps": cfg.eval_steps, "guidance": cfg.fd_guidance,
                   "thresholding": cfg.thresholding}
        sweep = {f"g{g:g}_{m}": {"steps": cfg.eval_steps, "guidance": g, "thresholding": m}
                 for g in cfg.eval_guidance for m in cfg.eval_thresholding}
        return options, sweep

    def cascade_settings(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """``(options, sweep)`` of the cascade's evaluation: the base's headline options
        with the super-resolution ones, and ``aug{a}`` for each of ``eval_aug_sweep``."""
        cfg = self.config
        options = {**self.evaluation_settings()[0], "sr_steps": cfg.eval_sr_steps,
                   "sr_guidance": cfg.eval_sr_guidance, "aug_level": cfg.eval_aug_level,
                   "sr_thresholding": cfg.sr_thresholding}
        sweep = {f"aug{a:g}": {**options, "aug_level": a} for a in cfg.eval_aug_sweep}
        return options, sweep

