"""``gan-int-cls``: the text-conditional GAN of Reed et al. (2016), and a modern variant.

``gaf run --objective gan-int-cls`` trains, in one run directory:

1. **the text embedding**: the paper's is a pretrained joint text–image embedding
   (char-CNN-RNN); here a frozen CLIP's unit caption embedding (``clip-text``'s
   ``pooled``). Without ``--set conditioner.clip=RUN_DIR`` (a trained ``clip`` run,
   which several GAN runs can share) a CLIP is trained first, for
   ``objective.clip_steps`` steps, in ``RUN_DIR/clip/`` (a resumed run reuses it).
   ``--conditioner text-transformer`` instead trains a text encoder jointly, with the
   discriminator (its matching function), from the mean of its real tokens' states;
2. **the generator and the discriminator** (:mod:`.networks`), by the losses of
   :mod:`.losses`;
3. **the evaluation**: the shared text-to-image evaluation
   (:func:`gaf.plugins.t2i.evaluation.evaluate_pipeline`) of the ``gan`` pipeline on
   ``objective.eval_split``, plus the paper's two figures (``samples/interpolation.png``:
   a fixed z with the text moved between two captions; ``samples/noise.png``: a fixed
   caption with z varied).

One training step
-----------------
A global batch of ``train.batch_size`` (image, caption) pairs in the ``"gan-order"``
epoch order, each with a wrong caption (``mismatch``: ``sample``, a caption drawn at
random from the training set, the paper's; or ``roll``, the next pair's caption in the
batch) and a partner caption for interpolation (the caption ``batch_size // 2`` places
further in the batch), and two noise vectors ``z``, ``z'`` (all drawn from the run
seed's ``"gan-noise"`` stream at the step, so a resumed run draws what the
uninterrupted one would). With embeddings ``e`` (own), ``ê`` (wrong), ``e'`` (partner)::

    x̂ = G(z, e)
    L_D = d_loss(D(x, e), D(sg x̂, e), D(x, ê) if cls)   [+ MA-GP(D; x, e) if ma_gp > 0]
    L_G = g_loss(D̄(x̂, e))  [+ g_loss(D̄(G(z', ẽ), ẽ)), ẽ = β e + (1 − β) e', if interpolate]

where ``sg`` stops the gradient and ``D̄`` is the discriminator with its parameters
detached (:func:`~gaf.plugins.autoencoders.losses.frozen_call`): ``L_G`` moves only
the generator, ``L_D`` only the discriminator (and a jointly trained text encoder).
The optimiser takes one step on ``L_D + L_G``: a simultaneous step of the two players
(the paper alternates a discriminator step and a generator step on the same batch),
each player in its own parameter group (:meth:`param_groups`: the generator at
``train.lr``, the discriminator at ``d_lr_ratio`` times it: two time-scales when the
ratio is not 1; Adam β = (0.5, 0.999), the paper's, as ``train.betas``). A wrong
caption identical to the image's own (common with class captions) is left out of the
wrong-text term. The interpolated embeddings have no real image, so they train the
generator only.

``loss``: ``original`` (binary cross-entropy on D's logits, non-saturating ``L_G``) or
``hinge``. The ``gan-int-cls-modern`` entry is the same class with the defaults of a
GAN that trains stably: hinge loss, a spectral-norm projection discriminator (its
``discriminator`` component ``sn-projection``), mismatched captions by rolling the
batch, an EMA of the generator, and the discriminator's learning rate 4× the
generator's (TTUR, Heusel et al. 2017). The matching-aware gradient penalty of DF-GAN
is an option of both (``ma_gp``), off by default: with DF-GAN's k = 2, p = 6 on the
spectral-norm projection discriminator the modern variant diverged on ``shapes`` within
600 steps, the generator drawing high-frequency patterns that the discriminator scored
as real (docs/results.md § GAN-INT-CLS).

Logged: ``loss``, ``d_loss``, ``g_loss`` and the parts ``d_real``, ``d_fake``,
``d_wrong``, ``ma_gp``, ``g_int``; ``d_real_acc`` and ``d_fake_acc``, the fractions of
real-matched and generated pairs the discriminator puts on the right side of 0.

No augmentation: a flip, shift or recolouring would change what a ``shapes`` caption
says.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.config import option
from gaf.config import to_dict as config_dict
from gaf.errors import BadConfig, BadData
from gaf.interfaces import ObjectiveBase
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, torch_generator

from ...autoencoders.losses import frozen_call
from ...images.batches import stack_images
from ...nn.ema import ema_decay, make_shadow, update_shadow
from ..diffusion_pipeline import PIPELINE_FILE
from ..training_data import conditions_of
from .losses import d_loss, g_loss, interpolate, matching_aware_gp
from .text import caption_embedder

__all__ = ["GANIntCls", "GANIntClsConfig", "GANIntClsModern", "GANIntClsModernConfig"]


@attrs.define
class GANIntClsConfig:
    """Options of the ``gan-int-cls`` objective (the ``[objective]`` section)."""

    loss: Literal["original", "hinge"] = option(
        "original", "original: cross-entropy, non-saturating generator; hinge")
    cls: bool = option(True, "matching-aware discriminator: real images with wrong "
                             "captions are a third kind of input (GAN-CLS)")
    interpolate: bool = option(True, "also train the generator on embeddings between "
                                     "two captions (GAN-INT)")
    int_beta: float = option(0.5, "interpolation weight beta: beta*e1 + (1-beta)*e2",
                             ge=0, le=1)
    mismatch: Literal["sample", "roll"] = option(
        "sample", "wrong captions: sample (at random from the training set) or roll "
                  "(the next pair's in the batch)")
    ma_gp: float = option(0.0, "weight k of DF-GAN's matching-aware gradient penalty "
                               "(0 = off; DF-GAN: 2)", ge=0)
    ma_gp_power: float = option(6.0, "exponent p of the matching-aware gradient penalty",
                                gt=0)
    d_lr_ratio: float = option(1.0, "the discriminator's (and a jointly trained text "
                                    "encoder's) learning rate over train.lr, the "
                                    "generator's (two time-scales when not 1)", gt=0)
    ema_decay: float = option(0.0, "EMA decay of the generator (0 = none; sampling uses "
                                   "the EMA copy when there is one)", ge=0, lt=1)
    clip_steps: int = option(1000, "steps of the CLIP trained first when the clip-text "
                                   "conditioner names none", ge=1)
    eval_images: int = option(200, "captions per evaluation set (0 = no evaluation)", ge=0)
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads ('validation' for tuning)")
    eval_batch_size: int = option(200, "images per sampling batch in the evaluation", ge=1)
    fd: bool = option(True, "report the in-domain FD of the samples (and its floor)")
    eval_clip_steps: int = option(3000, "training steps of the evaluation CLIP (0 = no "
                                        "CLIP score)", ge=0)
    eval_clip_dir: str = option("", "directory of the evaluation CLIP (default "
                                    "RUN_DIR/evaluation_clip); one can serve many runs")
    throughput_batch: int = option(200, "images in the timed sampling pass (0 = none)",
                                   ge=0)
    grid_prompts: int = option(8, "columns of samples/grid.png", ge=0)


class GANIntCls(ObjectiveBase):
    """GAN-INT-CLS (see the module docstring)."""

    Config = GANIntClsConfig
    uses = {"generator": "dcgan", "discriminator": "dcgan", "conditioner": "clip-text",
            "dataset": "shapes"}
    unit = "images"
    #: a text-to-image baseline of the timeline table (examples/timeline.py)
    timeline = {"year": 2016, "method": "GAN-INT-CLS",
                "paper": "Reed et al., Generative Adversarial Text to Image Synthesis "
                         "(arXiv 1605.05396)"}
    train_defaults = {"steps": 3000, "batch_size": 64, "lr": 2e-4, "warmup_steps": 0,
                      "schedule": "constant", "betas": (0.5, 0.999), "weight_decay": 0.0,
                      "max_grad_norm": 0.0,
                      "log_every": 50}
    plot_keys = ("d_loss", "g_loss", "d_real", "d_fake", "d_wrong", "d_real_acc",
                 "d_fake_acc")

    def __init__(self, config: GANIntClsConfig | None = None):
        self.config = config or GANIntClsConfig()

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        cfg = self.config
        self.device, self.world, self.seed = ctx.device, ctx.world, ctx.spec.seed
        self.batch_size, self.lr = ctx.spec.train.batch_size, ctx.spec.train.lr
        if self.batch_size < 2:
            raise BadConfig("gan-int-cls needs train.batch_size >= 2 (wrong and partner "
                            "captions come from the batch)")
        self.dataset = ctx.component("dataset")
        if len(self.dataset) < 2:
            raise BadData("gan-int-cls needs at least 2 training images")
        self.conditioner, self.text_source = self._text_encoder(ctx)
        self.embed = caption_embedder(self.conditioner)
        self.generator = ctx.component("generator")
        self.discriminator = ctx.component("discriminator")
        self.captions = conditions_of(self.dataset, "caption")
        self.images = stack_images(self.dataset, range(len(self.dataset)))
        self._check_shapes()
        self.joint = bool(getattr(self.conditioner, "trainable", False)) and any(
            p.requires_grad for p in self.conditioner.parameters())
        self.embeddings = None if self.joint else self._embed_all(self.captions)
        self.order = EpochOrder(len(self.dataset), self.seed, "gan-order")
        self.ema = {"generator_ema": make_shadow(self.generator)} if cfg.ema_decay else {}
        if ctx.world.is_main:
            self._write_pipeline_file(ctx)
        ctx.log(f"gan-int-cls: {len(self.images)} training images "
                f"{tuple(self.images.shape[1:])}, text embedding {self.embed.dim}-d "
                f"({'trained jointly' if self.joint else 'frozen'})")

    def _text_encoder(self, ctx: RunContext) -> tuple[Any, str]:
        """The conditioner, after training the CLIP it needs when none is named."""
        from ...clip.stage import clip_text_stage

        return clip_text_stage(ctx, self.dataset, self.config.clip_steps)

    def _check_shapes(self) -> None:
        g, d = self.generator.config, self.discriminator.config
        c, r = self.images.shape[1], self.images.shape[-1]
        for who, channels, key in (("generator", g.out_channels, "out_channels"),
                                   ("discriminator", d.in_channels, "in_channels")):
            res = getattr(self, who).config.resolution
            if (channels, res) != (c, r):
                raise BadConfig(f"the dataset's images are {tuple(self.images.shape[1:])} "
                                f"but the {who} makes {(channels, res, res)}; set "
                                f"{who}.{key}={c} and {who}.resolution={r}")
        for who in ("generator", "discriminator"):
            if getattr(self, who).config.text_dim != self.embed.dim:
                raise BadConfig(f"the text embedding is {self.embed.dim}-d but the {who} "
                                f"takes {getattr(self, who).config.text_dim}; set "
                                f"{who}.text_dim={self.embed.dim}")

    @torch.no_grad()
    def _embed_all(self, captions: list[str]) -> Tensor:
        """Every training caption's (frozen) embedding, computed once."""
        unique = sorted(set(captions))
        rows = torch.cat([self.embed(unique[s:s + 500]) for s in range(0, len(unique), 500)])
        index = {c: i for i, c in enumerate(unique)}
        return rows[torch.tensor([index[c] for c in captions], device=rows.device)]

    def _write_pipeline_file(self, ctx: RunContext) -> None:
        modules = {"generator": "generator"}
        if self.joint:
            modules["conditioner"] = "conditioner"
            fixed = None
        else:  # rebuilt from its resolved config (a CLIP's path made absolute)
            comp = ctx.spec.components["conditioner"]
            cfg = getattr(self.conditioner, "config", None)
            fixed = {"name": comp.name,
                     "options": config_dict(cfg) if attrs.has(type(cfg)) else comp.options}
        meta = {"format_version": 1, "objective": ctx.spec.objective, "pipeline": "gan",
                "modules": modules,
                "ema_modules": {**modules, "generator": "generator_ema"} if self.ema else None,
                "conditioner": fixed, "condition_key": "caption",
                "sample_shape": list(self.images.shape[1:])}
        atomic_write_text(ctx.run_dir / PIPELINE_FILE, json.dumps(meta, indent=2) + "\n")

    def modules(self) -> dict[str, Any]:
        mods = {"generator": self.generator, "discriminator": self.discriminator}
        if self.joint:
            mods["conditioner"] = self.conditioner
        return {**mods, **self.ema}

    def param_groups(self) -> list[dict[str, Any]]:
        """The generator at ``train.lr``; the discriminator (and a jointly trained text
        encoder) at ``d_lr_ratio × train.lr``. Betas and weight decay are ``[train]``'s."""
        d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if self.joint:
            d_params += [p for p in self.conditioner.parameters() if p.requires_grad]
        return [{"params": "generator"},
                {"params": d_params, "lr": self.lr * self.config.d_lr_ratio}]

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        """Micro-batch ``index``: this rank's share of the global batch (see the module
        docstring), a pure function of ``index`` and the seed."""
        b, n = self.batch_size, len(self.dataset)
        picks = torch.as_tensor(self.order.slice(index * b, b))
        gen = torch_generator(self.seed, "gan-noise", index)
        z_dim = self.generator.config.z_dim
        z = torch.randn(b, z_dim, generator=gen)
        z2 = torch.randn(b, z_dim, generator=gen)
        if self.config.mismatch == "sample":
            wrong = torch.randint(0, n, (b,), generator=gen)
        else:
            wrong = picks.roll(-1)
        partner = picks.roll(-(b // 2))
        start, count = self.world.shard(0, b)
        mine = slice(start, start + count)
        picks, wrong, partner = picks[mine], wrong[mine], partner[mine]
        valid = torch.tensor([self.captions[int(i)] != self.captions[int(j)]
                              for i, j in zip(picks, wrong)], dtype=torch.bool)
        batch = {"images": self.images[picks].to(self.device),
                 "z": z[mine].to(self.device), "z2": z2[mine].to(self.device),
                 "valid": valid.to(self.device)}
        if self.joint:
            batch["captions"] = [self.captions[int(i)] for i in picks]
            batch["wrong_captions"] = [self.captions[int(i)] for i in wrong]
            batch["partner_captions"] = [self.captions[int(i)] for i in partner]
        else:
            batch["e"] = self.embeddings[picks.to(self.embeddings.device)]
            batch["e_wrong"] = self.embeddings[wrong.to(self.embeddings.device)]
            batch["e_partner"] = self.embeddings[partner.to(self.embeddings.device)]
        return batch

    # ------------------------------------------------------------------- loss

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        cfg, G, D = self.config, self.generator, self.discriminator
        if self.joint:
            e = self.embed(batch["captions"])
            e_wrong = self.embed(batch["wrong_captions"])
            e_partner = self.embed(batch["partner_captions"]).detach()
        else:
            e, e_wrong, e_partner = batch["e"], batch["e_wrong"], batch["e_partner"]
        x, z = batch["images"], batch["z"]
        fake = G(z, e.detach())
        s_real = D(x, e)
        s_fake = D(fake.detach(), e)
        s_wrong = D(x, e_wrong) if cfg.cls else None
        loss_d, metrics = d_loss(s_real, s_fake, s_wrong, batch["valid"], cfg.loss)
        if cfg.ma_gp > 0:
            gp = matching_aware_gp(D, x, e, cfg.ma_gp, cfg.ma_gp_power)
            loss_d = loss_d + gp
            metrics["ma_gp"] = float(gp.detach())
        loss_g = g_loss(frozen_call(D, fake, e.detach()), cfg.loss)
        if cfg.interpolate:
            e_int = interpolate(e.detach(), e_partner, cfg.int_beta)
            g_int = g_loss(frozen_call(D, G(batch["z2"], e_int), e_int), cfg.loss)
            metrics["g_int"] = float(g_int.detach())
            loss_g = loss_g + g_int
        metrics.update({"d_loss": float(loss_d.detach()), "g_loss": float(loss_g.detach()),
                        "d_real_acc": float((s_real > 0).float().mean()),
                        "d_fake_acc": float((s_fake < 0).float().mean())})
        return loss_d + loss_g, metrics

    def after_step(self, step: int) -> None:
        """Move the generator's EMA copy towards the weights just stepped."""
        if self.ema:
            update_shadow(self.ema["generator_ema"], self.generator,
                          ema_decay(self.config.ema_decay, step))

    # ------------------------------------------------------------- evaluation

    def pipeline(self, ema: bool = True) -> Any:
        """A :class:`~.pipeline.GANPipeline` over this run's (EMA) generator."""
        from .pipeline import GANPipeline

        gen = self.ema.get("generator_ema", self.generator) if ema else self.generator
        return GANPipeline(gen, self.conditioner)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """The shared text-to-image evaluation of the ``gan`` pipeline, and the paper's
        two figures (see the module docstring)."""
        from ..evaluation import evaluate_pipeline, evaluation_splits
        from .figures import interpolation_figure, noise_figure

        cfg = self.config
        if cfg.eval_images == 0:
            return {}
        eval_ds, swapped, extra = evaluation_splits(ctx, cfg.eval_split, self.dataset, ctx.log)
        pipe = self.pipeline()
        captions = conditions_of(eval_ds, "caption")
        interpolation_figure(pipe, captions, ctx.run_dir / "samples", seed=ctx.spec.seed)
        noise_figure(pipe, captions, ctx.run_dir / "samples", seed=ctx.spec.seed)
        return {**extra, **evaluate_pipeline(
            pipe, {}, train_ds=self.dataset, eval_ds=eval_ds, swapped_ds=swapped,
            condition_key="caption", n_captions=cfg.eval_images,
            fd_images=cfg.eval_images if cfg.fd else 0,
            features_dir=ctx.run_dir / "features",
            clip_dir=cfg.eval_clip_dir or ctx.run_dir / "evaluation_clip",
            clip_steps=cfg.eval_clip_steps, batch_size=cfg.eval_batch_size,
            throughput_batch=cfg.throughput_batch, grid_prompts=cfg.grid_prompts,
            out_dir=ctx.run_dir, seed=ctx.spec.seed, info=self._evaluation_info(ctx),
            log=ctx.log)}

    def _evaluation_info(self, ctx: RunContext) -> dict[str, float]:
        """Parameters (trainable: the generator, and a jointly trained text encoder;
        frozen: the CLIP text tower, not the image tower loaded with it) and ``train_wall_s``: this run's last logged
        ``elapsed_s`` (a CLIP trained inside it included) plus, when the CLIP is a run
        named with ``conditioner.clip``, that run's ``setup_s + train_s``. The
        discriminator is not counted: it does not make images."""
        from ..evaluation import parameters_used, train_wall_seconds

        trainable = sum(p.numel() for p in self.generator.parameters())
        frozen = 0
        if self.joint:
            trainable += sum(p.numel() for p in self.conditioner.parameters())
        else:
            frozen = parameters_used(self.conditioner)

        from ...clip.stage import reused_clip

        seconds = train_wall_seconds(ctx.run_dir, reused_clip(self.text_source))
        return {"trainable_parameters": float(trainable), "frozen_parameters": float(frozen),
                "train_wall_s": round(seconds, 2)}


@attrs.define
class GANIntClsModernConfig(GANIntClsConfig):
    """Options of ``gan-int-cls-modern``: those of ``gan-int-cls`` with the defaults of a
    GAN that trains stably."""

    loss: Literal["original", "hinge"] = option(
        "hinge", "original: cross-entropy, non-saturating generator; hinge")
    mismatch: Literal["sample", "roll"] = option(
        "roll", "wrong captions: sample (at random from the training set) or roll "
                "(the next pair's in the batch)")
    ema_decay: float = option(0.999, "EMA decay of the generator (0 = none; sampling "
                                     "uses the EMA copy when there is one)", ge=0, lt=1)
    d_lr_ratio: float = option(4.0, "the discriminator's (and a jointly trained text "
                                    "encoder's) learning rate over train.lr, the "
                                    "generator's (two time-scales when not 1)", gt=0)


class GANIntClsModern(GANIntCls):
    """``gan-int-cls-modern``: GAN-INT-CLS with a hinge loss, the spectral-norm
    projection discriminator (``discriminator sn-projection``), mismatched captions by
    rolling the batch, an EMA of the generator and the discriminator's learning rate 4×
    the generator's (see the module docstring; DF-GAN's matching-aware gradient penalty
    is the option ``ma_gp``)."""

    Config = GANIntClsModernConfig
    uses = {**GANIntCls.uses, "discriminator": "sn-projection"}
    timeline = {"year": 2016, "method": "GAN-INT-CLS, trained as in 2022",
                "paper": "Reed et al. 2016, with the hinge loss, spectral norm (Miyato et "
                         "al. 2018), a projection discriminator (Miyato & Koyama 2018), "
                         "TTUR (Heusel et al. 2017) and MA-GP (Tao et al., DF-GAN, 2022)"}
