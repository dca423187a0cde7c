"""``ldm``: latent diffusion (Rombach et al. 2022), text- or class-conditional, on an image dataset.

``gaf run --objective ldm --dataset shapes`` trains, in one run directory:

1. **the first stage**, unless ``--autoencoder`` names a trained one (a run directory
   or a saved autoencoder): the ``autoencoder`` objective with the same dataset and
   autoencoder options runs for ``objective.first_stage_steps`` steps in
   ``RUN_DIR/first_stage/`` (a resumed run reuses it). ``--autoencoder none`` is
   pixel-space diffusion through the same code: the identity first stage has nothing
   to train;
2. **the noise model and the conditioner, jointly** (the LDM recipe for its text
   transformer), with an exponential moving average of both;
3. **the evaluation**: the one evaluation of every text-to-image generator
   (:func:`.evaluation.evaluate_pipeline`) on the split ``objective.eval_split``
   (``eval`` for reported figures, ``validation`` when tuning guidance or steps):
   attribute scores on unseen captions at the guidance scales ``eval_guidance``, and
   at ``fd_guidance`` the floors, ceilings, swapped-pair binding, FD/KID against a
   disjoint real set and diversity, with the parameter counts and training time;
   for class labels on a dataset without an attribute evaluator (``idx``)
   also the class-wise evaluation (:mod:`.class_conditional`: the in-domain
   classifier's accuracy on the samples of each class, FD per class and overall with
   their floors, at each guidance scale), ``eval_per_class`` samples per class.

The frozen first stage
----------------------
Every training image is encoded once, before the first step, to its posterior mean
(KL) or pre-quantisation latent (VQ) and multiplied by the autoencoder's
``scale_factor`` (fitted to unit variance on the training data by the autoencoder
objective, as the LDM's ``scale_by_std``). The cached latents ``z0`` are what the
diffusion model learns; the first stage never sees a gradient and is not part of the
checkpoints (``RUN_DIR/pipeline.json`` records where it is). Encoding once instead of
per step removes the encoder from the training loop (it costs more than this UNet);
the LDM instead encodes each batch and samples the posterior, which with a KL weight of
1e-6 differs from the mean by far less than the diffusion noise.

Loss (Ho et al. 2020; Salimans & Ho 2022 for v)
-----------------------------------------------
For a batch of latents ``z0`` with conditions ``c``: ``t ~ U{0, …, T−1}``,
``ε ~ N(0, I)``, ``z_t = √ᾱ_t z0 + √(1−ᾱ_t) ε`` (the training scheduler's
``add_noise``), and each condition is replaced by the conditioner's learned ``null``
with probability ``p_uncond`` (classifier-free guidance training, Ho & Salimans 2022)::

    L = mean ‖f_θ(z_t, t, τ(c)) − target‖²,   target = ε | v = √ᾱ_t ε − √(1−ᾱ_t) z0 | z0

as the noise model's ``prediction_type`` says (the training scheduler is configured to
match it; the ``unet`` default is v: trained on ε, the shapes model learned colours but
placed objects wherever the noise put them, see docs/results.md). ``t``, ``ε`` and the dropped conditions are drawn from the run seed's
``"ldm-noise"`` stream at the micro-batch number (and the rank's first position), and
the images from the ``"ldm-order"`` :class:`~gaf.seeding.EpochOrder`, so
``train_batch(i)`` is a pure function of ``i`` (exact resumes). Logged: ``loss`` (the MSE), ``loss_cond`` and ``loss_uncond``
(its mean over kept and dropped conditions), ``dropped``.

EMA
---
After each optimiser step the EMA copies ``noise_model_ema`` and ``conditioner_ema``
move towards the trained weights (:mod:`gaf.plugins.nn.ema`; ``ema_decay = 0``
turns it off). They are checkpointed and exported beside the trained modules, and
sampling uses them by default.

Schedulers
----------
The ``scheduler`` component is the *training* noise schedule (default ``ddpm``: linear
β from 1e-4 to 0.02 over 1000 steps). For latents, ``clip_sample`` is switched off
(clipping x̂0 to [−1, 1] is meaningless for unit-variance latents; Stable Diffusion
does the same); pixel space keeps the scheduler's setting. Sampling may use any
scheduler built ``from_config`` of it (``objective.eval_scheduler``, ``gaf sample
--scheduler``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.components import load_from
from gaf.config import to_dict as config_dict
from gaf.config import option
from gaf.errors import BadConfig, BadData
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, rng, torch_generator

from ..images.batches import stack_images
from ..nn.ema import ema_decay, make_shadow, update_shadow
from .diffusion_pipeline import PIPELINE_FILE
from .training_data import conditions_of

__all__ = ["LDM", "LDMConfig"]


@attrs.define
class LDMConfig:
    """Options of the ``ldm`` objective (the ``[objective]`` section)."""

    p_uncond: float = option(0.1, "probability of training a condition as the null "
                                  "(classifier-free guidance)", ge=0, lt=1)
    ema_decay: float = option(0.999, "EMA decay cap (warm-up min(decay, (1+n)/(10+n))); "
                                     "0 = no EMA", ge=0, lt=1)
    first_stage_steps: int = option(2000, "steps of the autoencoder stage when "
                                          "--autoencoder is not a trained one", ge=0)
    encode_batch_size: int = option(250, "images per batch when caching the latents", ge=1)
    eval_images: int = option(200, "captions per evaluation set (the first unseen ones; "
                                   "0 = no evaluation)", ge=0)
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads: 'eval' for reported figures, "
                "'validation' for tuning guidance, steps and the like")
    eval_guidance: tuple[float, ...] = option((1.0, 3.0, 7.0), "guidance scales evaluated",
                                              ge=0)
    eval_scheduler: str = option("ddim", "scheduler used to sample the evaluation images")
    eval_steps: int = option(50, "sampling steps of the evaluation", ge=1)
    eval_batch_size: int = option(100, "images per sampling batch in the evaluation", ge=1)
    fd: bool = option(True, "report the in-domain FD of the samples (and its floor)")
    fd_guidance: float = option(3.0, "guidance scale of the headline row (FD/KID, "
                                     "floors, swapped pairs, diversity)", ge=0)
    eval_clip_steps: int = option(3000, "training steps of the evaluation CLIP (CLIP "
                                        "score, R-precision; 0 = not reported)", ge=0)
    eval_clip_dir: str = option("", "directory of the evaluation CLIP, trained there when "
                                    "absent (default RUN_DIR/evaluation_clip); one "
                                    "directory can serve many runs on the same data")
    throughput_batch: int = option(200, "images in the one timed sampling pass that gives "
                                        "images_per_s (0 = not measured)", ge=0)
    grid_prompts: int = option(8, "columns of samples/grid.png (one row per guidance)", ge=0)
    eval_per_class: int = option(100, "class labels without an attribute evaluator (idx): "
                                      "samples per class of the class-wise evaluation "
                                      "(accuracy, FD per class; 0 = none)", ge=0)

    def __attrs_post_init__(self) -> None:
        self.eval_guidance = tuple(float(g) for g in self.eval_guidance)


def frozen_first_stage(ctx: RunContext, dataset: Any, steps: int) -> tuple[Any, str]:
    """The run's autoencoder, frozen (eval mode, no gradients), and where it came from:
    the directory given as ``--autoencoder PATH``; else, for a registered one with
    parameters, the one trained for ``steps`` steps as the run's first stage in
    ``RUN_DIR/first_stage/`` (reused when it is there: a resumed run does not train it
    again), ``"first_stage/autoencoder"``; else (``none``) ``""``. An autoencoder
    without a fitted latent scale factor gets one fitted on up to 1,000 training images
    (not saved to it). Used by ``ldm`` and the token models (``dalle``, ``parti``)."""
    comp = ctx.spec.components["autoencoder"]
    ae = ctx.component("autoencoder")
    source = comp.name if ctx.registry.is_path("autoencoder", comp.name) else ""
    if not source and getattr(ae, "trainable", True) and _has_parameters(ae):
        stage = ctx.run_dir / "first_stage"
        if not (stage / "autoencoder" / "gaf.json").is_file():
            from gaf.launch import train_stage

            ctx.log(f"stage 1: training the autoencoder ({steps} steps) in {stage}")
            train_stage(ctx, stage, "autoencoder", ("autoencoder", "dataset"),
                        {"steps": steps}, label="autoencoder stage")
        ae = load_from(ctx.registry, "autoencoder", stage / "autoencoder").to(ctx.device)
        source = "first_stage/autoencoder"
    for p in ae.parameters():
        p.requires_grad_(False)
    ae.eval()
    if not getattr(ae, "scale_factor_fitted", True):
        n = min(1000, len(dataset))
        picks = rng(ctx.spec.seed, "scale-factor-images").permutation(len(dataset))[:n]
        ae.fit_scale_factor(stack_images(dataset, picks.tolist()).to(ctx.device))
        ctx.log(f"the autoencoder had no fitted scale factor: fitted "
                f"{ae.scale_factor:.4f} on {n} training images (not saved to it)")
    return ae, source


class LDM:
    """Latent diffusion: a frozen first stage, a noise model and a jointly trained conditioner."""

    Config = LDMConfig
    uses = {"noise-model": "unet", "conditioner": "text-transformer",
            "autoencoder": "kl-vae", "scheduler": "ddpm", "dataset": "shapes"}
    unit = "images"
    #: the registered pipeline that samples the run (``pipeline.json``'s ``"pipeline"``)
    pipeline_name = "diffusion"
    #: a text-to-image baseline of the timeline table (examples/timeline.py)
    timeline = {"year": 2021, "method": "latent diffusion",
                "paper": "Rombach et al., High-Resolution Image Synthesis with Latent Diffusion Models (arXiv 2112.10752)"}
    # The defaults of the run in docs/results.md § Text to image (its timings are there).
    train_defaults = {"steps": 4000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100,
                      "schedule": "cosine", "max_grad_norm": 1.0, "log_every": 50}
    plot_keys = ("loss", "loss_cond", "loss_uncond", "lr", "grad_norm")

    def __init__(self, config: LDMConfig | None = None):
        self.config = config or LDMConfig()

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        if ctx.world.enabled and ctx.spec.train.parallel == "fsdp":
            raise BadConfig("objective ldm trains with train.parallel=ddp (its EMA reads "
                            "the whole weights after every step)")
        self.device = ctx.device
        self.world = ctx.world
        self.seed = ctx.spec.seed
        self.batch_size = ctx.spec.train.batch_size
        self.dataset = ctx.component("dataset")
        if len(self.dataset) < 1:
            raise BadData("the dataset has no images")
        self.autoencoder, self.autoencoder_source = self._first_stage(ctx)
        self.noise_model = ctx.component("noise-model")
        self.conditioner = self._conditioner(ctx)
        self.scheduler = self._training_scheduler(ctx)
        self._check_shapes()
        self.latents = self._encode_dataset(ctx)
        self.sample_shape = tuple(self.latents.shape[1:])
        key = self.conditioner.condition_key
        self.conditions = conditions_of(self.dataset, key)
        self.order = EpochOrder(len(self.dataset), self.seed, "ldm-order")
        self._setup_more(ctx)
        self.ema: dict[str, Any] = {}
        if cfg.ema_decay > 0:  # a shadow "<attr>_ema" of each trained module self.<attr>
            self.ema = {f"{name}_ema": make_shadow(module)
                        for name, module in self.modules().items()}
        if ctx.world.is_main:
            self._write_pipeline_file(ctx)
        ctx.log(f"ldm: {len(self.latents)} training latents of shape {self.sample_shape}, "
                f"first stage {self.autoencoder_source}")

    def _conditioner(self, ctx: RunContext) -> Any:
        """The conditioner (``unclip`` trains the CLIP it needs first)."""
        return ctx.component("conditioner")

    def _setup_more(self, ctx: RunContext) -> None:
        """Set up a subclass's further modules, before the EMA copies of
        :meth:`modules` are made (nothing for ``ldm``)."""

    def _first_stage(self, ctx: RunContext) -> tuple[Any, str]:
        """The frozen autoencoder and where it came from (trained here if needed)."""
        return frozen_first_stage(ctx, self.dataset, self.config.first_stage_steps)

    def _training_scheduler(self, ctx: RunContext) -> Any:
        sched = ctx.component("scheduler")
        changes: dict[str, Any] = {}
        why = []
        predicts = self.noise_model.prediction_type
        if sched.config.prediction_type != predicts:
            changes["prediction_type"] = predicts
            why.append(f"prediction_type={predicts} (what the noise model predicts)")
        latent = _has_parameters(self.autoencoder)
        if latent and getattr(sched.config, "clip_sample", False):
            changes["clip_sample"] = False
            why.append("clip_sample=False (x0 clipping to [-1, 1] is meaningless for latents)")
        if changes:
            sched = type(sched).from_config(sched.config, **changes)
            ctx.log("training scheduler: " + "; ".join(why))
        return sched

    def _check_shapes(self) -> None:
        nm, cond, ae = self.noise_model, self.conditioner, self.autoencoder
        channels = getattr(ae.config, "latent_channels", None)
        if channels is not None and nm.in_channels != channels:
            raise BadConfig(f"the first stage gives {channels}-channel latents but the noise "
                            f"model takes {nm.in_channels}; set noise-model.in_channels="
                            f"{channels}")
        context_dim = getattr(getattr(nm, "config", None), "context_dim", None)
        if context_dim is not None and context_dim != cond.width:
            raise BadConfig(f"the conditioner gives {cond.width}-wide token states but the "
                            f"noise model's cross-attention takes {context_dim}; set "
                            f"noise-model.context_dim={cond.width}")

    @torch.no_grad()
    def _encode_dataset(self, ctx: RunContext) -> Tensor:
        """Every training image's scaled latent, computed once (see the module doc)."""
        ae = self.autoencoder
        scale = float(ae.scale_factor)
        n = len(self.dataset)
        out = []
        for start in range(0, n, self.config.encode_batch_size):
            picks = range(start, min(n, start + self.config.encode_batch_size))
            images = stack_images(self.dataset, picks).to(self.device)
            out.append(ae.encode(images).float() * scale)
        latents = torch.cat(out)
        if not torch.isfinite(latents).all():
            raise BadData("the first stage produced non-finite latents")
        return latents

    def _write_pipeline_file(self, ctx: RunContext) -> None:
        meta = self._pipeline_meta(ctx)
        atomic_write_text(ctx.run_dir / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")

    def _pipeline_meta(self, ctx: RunContext) -> dict[str, Any]:
        """``RUN_DIR/pipeline.json``: every trained module (:meth:`modules`) and its EMA
        shadow, a conditioner that is not trained by its resolved options, the first
        stage, the training scheduler, the sample shape (a subclass adds its own)."""
        comp = ctx.spec.components["autoencoder"]
        if self.autoencoder_source:
            first = {"path": self.autoencoder_source}
        else:
            first = {"name": comp.name, "options": comp.options}
        trained = {name: name for name in self.modules() if name not in self.ema}
        ema = {name: f"{name}_ema" for name in trained} if self.ema else None
        fixed = None  # a conditioner that is not trained is rebuilt from its spec
        if "conditioner" not in trained:
            comp = ctx.spec.components["conditioner"]
            # its resolved config (a frozen tower's path made absolute), else the spec's
            cfg = getattr(self.conditioner, "config", None)
            fixed = {"name": comp.name,
                     "options": config_dict(cfg) if attrs.has(type(cfg)) else comp.options}
        return {"format_version": 1, "objective": ctx.spec.objective,
                "pipeline": self.pipeline_name, "modules": trained,
                "ema_modules": ema, "conditioner": fixed, "autoencoder": first,
                "scheduler": {"name": ctx.spec.components["scheduler"].name,
                              "config": _plain(self.scheduler.config)},
                "sample_shape": list(self.sample_shape),
                "condition_key": self.conditioner.condition_key}

    def sampling_module(self, name: str, ema: bool = True) -> Any:
        """The trained module ``self.<name>``, or its EMA shadow when ``ema`` and the run
        keeps one."""
        module = getattr(self, name)
        return self.ema.get(f"{name}_ema", module) if ema else module

    def modules(self) -> dict[str, Any]:
        mods = {"noise_model": self.noise_model}
        if _has_parameters(self.conditioner) and self.conditioner.trainable:
            mods["conditioner"] = self.conditioner
        return {**mods, **self.ema}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = self.order.slice(start, count)
        gen = torch_generator(self.seed, "ldm-noise", index, start)
        T = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, T, (count,), generator=gen)
        noise = torch.randn((count, *self.sample_shape), generator=gen)
        drop = torch.rand(count, generator=gen) < self.config.p_uncond
        return {"z0": self.latents[picks], "conditions": [self.conditions[i] for i in picks],
                "t": t.to(self.device), "noise": noise.to(self.device),
                "drop": drop.to(self.device)}

    # ------------------------------------------------------------------- loss

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        z0, t, noise, drop = batch["z0"], batch["t"], batch["noise"], batch["drop"]
        sched = self.scheduler
        z_t = sched.add_noise(z0, noise, t)
        context = self.encode_conditions(batch["conditions"])
        null = self.conditioner.null(len(drop)).to(context)
        context = torch.where(drop[:, None, None], null, context)
        out = self.noise_model(z_t, t, context)
        target = sched.training_target(z0, noise, t)
        per_item = F.mse_loss(out.float(), target.float(), reduction="none").flatten(1).mean(1)
        loss = per_item.mean()
        metrics = {"dropped": float(drop.float().mean())}
        seen, kept = per_item.detach(), ~drop
        if kept.any():
            metrics["loss_cond"] = float(seen[kept].mean())
        if drop.any():
            metrics["loss_uncond"] = float(seen[drop].mean())
        return loss, metrics

    def encode_conditions(self, conditions: list[Any]) -> Tensor:
        """The conditioner's context of a batch's conditions (a subclass may look up
        states it computed once instead)."""
        return self.conditioner(conditions)

    def after_step(self, step: int) -> None:
        """Move the EMA copies towards the weights just stepped."""
        if not self.ema:
            return
        decay = ema_decay(self.config.ema_decay, step)
        for name, shadow in self.ema.items():
            update_shadow(shadow, getattr(self, name.removesuffix("_ema")), decay)

    # ------------------------------------------------------------- evaluation

    def pipeline(self, scheduler: str | None = None, ema: bool = True) -> Any:
        """A :class:`~.pipeline.DiffusionPipeline` over this run's (EMA) modules."""
        from .diffusion_pipeline import DiffusionPipeline

        import gaf

        name = scheduler or self.config.eval_scheduler
        sched = gaf.REGISTRY.get("scheduler", name).from_config(_plain(self.scheduler.config))
        nm = self.sampling_module("noise_model", ema)
        cond = self.sampling_module("conditioner", ema)
        return DiffusionPipeline(nm, sched, autoencoder=self.autoencoder, conditioner=cond,
                                 sample_shape=self.sample_shape)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """:func:`.evaluation.evaluate_pipeline` of the EMA pipeline on ``eval_split``."""
        from .evaluation import evaluate_pipeline, evaluation_splits

        cfg = self.config
        if cfg.eval_images == 0:
            return {}
        eval_ds, swapped, extra = evaluation_splits(ctx, cfg.eval_split, self.dataset, ctx.log)
        options, sweep = self.evaluation_settings()
        pipe = self.pipeline()
        out = {**extra, **evaluate_pipeline(
            pipe, options, train_ds=self.dataset, eval_ds=eval_ds,
            swapped_ds=swapped, sweep=sweep, condition_key=self.conditioner.condition_key,
            n_captions=cfg.eval_images, fd_images=cfg.eval_images if cfg.fd else 0,
            features_dir=self.features_dir(ctx), clip_dir=self.evaluation_clip_dir(ctx),
            clip_steps=cfg.eval_clip_steps, batch_size=cfg.eval_batch_size,
            throughput_batch=cfg.throughput_batch, grid_prompts=cfg.grid_prompts,
            out_dir=ctx.run_dir, seed=ctx.spec.seed,
            info=self._evaluation_info(ctx), log=ctx.log)}
        return {**out, **self._more_figures(ctx, pipe, options, eval_ds)}

    def features_dir(self, ctx: RunContext) -> Path:
        """Where the evaluation's in-domain feature net is cached (trained there when
        absent): ``RUN_DIR/features`` (a fine-tuning objective may share its base run's)."""
        return ctx.run_dir / "features"

    def evaluation_clip_dir(self, ctx: RunContext) -> Path:
        """Where the evaluation CLIP is cached (trained there when absent):
        ``objective.eval_clip_dir``, else ``RUN_DIR/evaluation_clip``."""
        return Path(self.config.eval_clip_dir or ctx.run_dir / "evaluation_clip")

    def evaluation_settings(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """``(options, sweep)`` of the evaluation: the pipeline's call options of the
        headline row (``fd_guidance``) and the named other settings scored beside it
        (``g{s}`` for each of ``eval_guidance``)."""
        cfg = self.config
        options = {"steps": cfg.eval_steps, "guidance": cfg.fd_guidance}
        sweep = {f"g{g:g}": {"steps": cfg.eval_steps, "guidance": g} for g in cfg.eval_guidance}
        return options, sweep

    def _more_figures(self, ctx: RunContext, pipe: Any, options: dict[str, Any],
                      eval_ds: Any) -> dict[str, float]:
        """Figures beside the shared evaluation's: for ``ldm``, the class-wise evaluation
        (:mod:`.class_conditional`) of a run conditioned on class labels whose eval
        split has no attribute evaluator (``idx``), else none; a subclass
        gives its own."""
        from .class_conditional import class_figures_of_run

        return class_figures_of_run(self, ctx, pipe, options, eval_ds)

    def _evaluation_info(self, ctx: RunContext) -> dict[str, float]:
        """Parameters (trainable: the noise model and a trained conditioner; frozen: the
        first stage and a fixed conditioner) and ``train_wall_s``, the training wall time
        of the method: this run's last logged ``elapsed_s`` (seconds from the start of the
        run, so the setup and a first stage trained inside it are counted once) plus,
        when the first stage is a trained run reused with ``--autoencoder RUN_DIR``, that
        run's ``setup_s + train_s`` from its summary.json. (Named apart from the run
        summary's ``train_s``, the seconds of this run's training steps alone. A resumed
        run counts the wall time of its last process only.)"""
        trainable = sum(p.numel() for m in ("noise_model", "conditioner")
                        if m in self.modules() for p in self.modules()[m].parameters())
        frozen = sum(p.numel() for p in self.autoencoder.parameters())
        if "conditioner" not in self.modules() and _has_parameters(self.conditioner):
            from .evaluation import parameters_used

            frozen += parameters_used(self.conditioner)
        info = {"trainable_parameters": float(trainable), "frozen_parameters": float(frozen)}
        from .evaluation import train_wall_seconds

        seconds = train_wall_seconds(ctx.run_dir, reused_first_stage(self.autoencoder_source))
        info["train_wall_s"] = round(seconds, 2)
        return info


# ------------------------------------------------------------------- helpers


def reused_first_stage(source: str) -> Path | None:
    """The directory of a first stage reused from another run (``--autoencoder
    RUN_DIR``), from :func:`frozen_first_stage`'s ``source``; None when the run trained
    its own (``first_stage/autoencoder``) or has none."""
    return Path(source) if source and source != "first_stage/autoencoder" else None


def _has_parameters(module: Any) -> bool:
    return any(True for _ in getattr(module, "parameters", lambda: ())())


def _plain(cfg: Any) -> dict[str, Any]:
    from gaf.config import to_dict

    return to_dict(cfg) if attrs.has(type(cfg)) else dict(cfg)
