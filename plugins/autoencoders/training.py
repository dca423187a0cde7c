"""``autoencoder``: train an LDM first stage (``kl-vae`` or ``vqgan``) on an image dataset.

``gaf run --objective autoencoder --autoencoder kl-vae --dataset shapes`` (defaults:
32x32 shapes, f=4, c=3, 2000 steps of 16 images, GAN from step 1200) trains the
first stage and reports the eval split's reconstruction metrics (below); ``--autoencoder
vqgan`` (|Z| = 256, EMA) trains the vector-quantised one. What these defaults reach
(PSNR, SSIM, rFD and its floor, the feature net's accuracy, the time they take) is in
docs/results.md § Autoencoders, with the command that measured it.

Losses (Rombach et al. 2022, Esser et al. 2021)
-----------------------------------------------
Per micro-batch of images ``x`` with reconstruction ``x̂ = D(E(x))`` (a posterior
*sample* for ``kl-vae``; the straight-through quantised latent for ``vqgan``)::

    L_rec  = mean |x − x̂|                                  (rec_loss = "l1"; or "l2")
    L_reg  = kl_weight · KL / (C·H·W)                        kl-vae (KL summed over latent
                                                             elements, batch mean)
           = codebook_weight · (‖sg z − z_q‖² + β‖z − sg z_q‖²)   vqgan (means; with an EMA
                                                             codebook only the β term)
    L_G    = L_rec + L_reg + disc_factor · λ · (−mean D_φ(x̂))      once the GAN is on
    L_D    = disc_factor · ½ (mean relu(1 − D_φ(x)) + mean relu(1 + D_φ(sg x̂)))

The reconstruction term is L1 only: the LDM adds the LPIPS perceptual loss, whose
VGG weights cannot be downloaded here, so there is **no perceptual term** (the
PatchGAN carries the sharpness). Dividing the LDM's per-image KL by the ``C·H·W``
pixel values matches its per-image *summed* reconstruction loss, so the LDM's
``kl_weight = 1e-6`` keeps its meaning with a per-pixel *mean* L1.

GAN schedule and adaptive weight
--------------------------------
The PatchGAN discriminator :class:`~gaf.plugins.autoencoders.PatchDiscriminator`
is off for the first ``disc_start`` optimiser steps (the autoencoder first learns
to reconstruct; both GAN terms are absent and the discriminator gets no gradient).
From step ``disc_start`` on, the generator's GAN term is weighted by the LDM's
adaptive weight, measured at the decoder's last layer ``G_L`` (its output conv
weight)::

    λ = disc_weight · clamp(‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + 1e−4), 0, 1e4)   (detached)

so the GAN gradient reaching the decoder has ``disc_weight`` times the size of the
reconstruction gradient, whatever the scale of either loss.

One optimiser, two players
--------------------------
The trainer (:func:`gaf.train.train`) runs ONE optimiser over every parameter of
:meth:`modules` (the autoencoder and the discriminator) and one loss per step.
:meth:`AutoencoderTraining.loss` therefore returns ``L_G + L_D`` built so that each
player gets exactly its own gradient:

* the generator's GAN term evaluates the discriminator through
  :func:`~gaf.plugins.autoencoders.losses.frozen_call` (parameters
  detached): gradient flows into ``x̂`` and the autoencoder, never into ``φ``;
* ``L_D`` sees only detached images (``x`` and ``sg x̂``): it moves ``φ`` and
  nothing else.

Hence ``∇_φ(L_G + L_D) = ∇_φ L_D`` and ``∇_θ(L_G + L_D) = ∇_θ L_G``: one AdamW step
is a simultaneous generator step and discriminator step (as the LDM's two
optimisers would take them on the same batch; the tests check both identities).
Both players share the learning rate and Adam betas (``(0.5, 0.9)`` as in the LDM
by default). Gradient clipping is off by default (``max_grad_norm = 0``): one
global norm would couple the two players' step sizes.

Evaluation (``evaluate``, also ``gaf eval RUN_DIR``)
--------------------------------------------------
1. **Scale factor**: ``scale_factor = 1 / std(encode(x))`` over ``scale_images``
   training images (KL: posterior means; VQ: pre-quantisation latents), written
   into the autoencoder's ``latent_scale`` buffer and the exported component
   ``RUN_DIR/autoencoder/`` is re-saved with it (``gaf.load("autoencoder", RUN_DIR)``
   restores it). Not recomputed by ``gaf eval`` once fitted.
2. **Reconstructions** ``decode(encode(x))`` (posterior mode for KL) of the first
   ``eval_images`` images of the dataset's ``eval`` split, clamped to [-1, 1]:
   ``psnr`` (dB), ``ssim`` (gaf's ``psnr``/``ssim`` metrics), ``eval_l1``;
   for ``vqgan`` also ``codebook_usage`` (fraction of the codes used at least
   once on those images) and ``perplexity`` (of the code frequencies over them).
3. **rFD** (``fd = true``): in-domain Fréchet distance between the reconstructions
   and the same real images, on the features of a classifier trained on the real
   training split (:mod:`gaf.plugins.metrics.features`, trained once and cached in
   ``RUN_DIR/features/``; ``fd_features`` picks its variant: ``layout``, the default
   and the text-to-image evaluation's, keeps a 3x3 map and so sees misplaced objects;
   ``pooled`` is the version-1 globally pooled net of the rFD figures measured before
   issue 15). Reported with ``feature_accuracy`` (its held-out
   accuracy) and ``rfd_floor``, the real-vs-real FD between those images and the
   next ``eval_images`` real eval images: the FD between two different real samples
   of this size, i.e. the scale of sampling noise. A perfect autoencoder scores 0
   (its reconstructions *are* the real images); an rFD below the floor means the
   reconstructions differ from their originals less than two real samples differ.
   Not comparable with published rFID values (no Inception network here).
4. ``autoencoder_parameters``, ``discriminator_parameters``, ``latent_std`` (of the
   unscaled latents) and ``scale_factor``; ``samples/reconstructions.png`` is a grid
   of originals (top row) over reconstructions (bottom row).

Data: ``train_batch(i)`` takes ``batch_size`` items of the ``dataset`` component in
a seeded per-epoch permutation (the core's ``EpochOrder`` on the stream
``"autoencoder-order"``: a pure function of ``i`` and the seed); the evaluation split
is built through the registry with the same options and
``split = "eval"`` (a dataset without a ``split`` option is evaluated on its own
items, reported as ``eval_on_train = 1``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, BadData, GafError
from gaf.runs import RunContext
from gaf.seeding import EpochOrder, rng

from ..images.batches import split_dataset, stack_images
from ..images.grid import save_grid
from .losses import (adaptive_weight, frozen_call, hinge_d_loss, hinge_g_loss,
                                 kl_per_pixel, reconstruction_loss)
from .discriminator import PatchDiscriminator

__all__ = ["AutoencoderTraining", "AutoencoderTrainingConfig"]


@attrs.define
class AutoencoderTrainingConfig:
    """Options of the ``autoencoder`` objective (the ``[objective]`` section)."""

    rec_loss: Literal["l1", "l2"] = option("l1", "reconstruction loss per pixel (no "
                                                 "perceptual term: LPIPS is not available)")
    kl_weight: float = option(1e-6, "kl-vae: weight of the KL term (LDM scale, see docs)",
                              ge=0)
    codebook_weight: float = option(1.0, "vqgan: weight of the codebook + commitment loss",
                                    ge=0)
    disc_start: int = option(1200, "optimiser step at which the PatchGAN switches on "
                                  "(>= train.steps: never)", ge=0)
    disc_weight: float = option(0.5, "multiplier of the adaptive GAN weight (0 = no GAN)",
                                ge=0)
    disc_factor: float = option(1.0, "multiplier of both GAN losses once switched on", ge=0)
    disc_channels: int = option(32, "discriminator base width", ge=1)
    disc_layers: int = option(2, "discriminator stride-2 layers (patch size 34 px at 2)",
                              ge=1)
    disc_norm: Literal["group", "batch"] = option("group", "discriminator normalisation")
    eval_images: int = option(1000, "eval-split images reconstructed for the metrics "
                                    "(the rFD floor uses as many more)", ge=1)
    eval_batch_size: int = option(100, "batch size of the evaluation passes", ge=1)
    scale_images: int = option(1000, "training images used to fit the latent scale factor",
                               ge=1)
    grid_images: int = option(8, "images in samples/reconstructions.png", ge=0)
    fd: bool = option(True, "report in-domain rFD (trains a small feature net once)")
    fd_epochs: int = option(12, "feature-net training epochs", ge=1)
    fd_train_images: int = option(5000, "training images for the feature net (0 = all)",
                                  ge=0)
    fd_features: str = option("layout", "feature net of rFD: layout (3x3 map, sees where "
                                        "objects are) or pooled (the version-1 global pool "
                                        "of the earlier rFD figures)",
                              choices=("layout", "pooled"))


class AutoencoderTraining:
    """Train a first-stage autoencoder: L1 + KL/VQ + PatchGAN hinge with adaptive weight."""

    Config = AutoencoderTrainingConfig
    uses = {"autoencoder": "kl-vae", "dataset": "shapes"}
    # Adam betas as in the LDM; what these defaults reach and take is in
    # docs/results.md § Autoencoders.
    train_defaults = {"steps": 2000, "batch_size": 16, "lr": 1e-3, "betas": (0.5, 0.9),
                      "warmup_steps": 20, "max_grad_norm": 0.0, "log_every": 20}

    def __init__(self, config: AutoencoderTrainingConfig | None = None):
        self.config = config or AutoencoderTrainingConfig()

    # ------------------------------------------------------------------ setup

    def setup(self, ctx: RunContext) -> None:
        self.autoencoder = ctx.component("autoencoder")
        self.dataset = ctx.component("dataset")
        self.device = ctx.device
        if len(self.dataset) < 1:
            raise BadData("the dataset has no images")
        ae_cfg = self.autoencoder.config
        channels = getattr(self.dataset, "channels", None)
        if channels is not None and channels != ae_cfg.in_channels:
            raise BadConfig(f"the dataset has {channels}-channel images but the autoencoder "
                            f"takes {ae_cfg.in_channels}; set autoencoder.in_channels="
                            f"{channels}")
        resolution = getattr(self.dataset, "resolution", None)
        if resolution and resolution % ae_cfg.downsample:
            raise BadConfig(f"image size {resolution} is not divisible by the autoencoder's "
                            f"downsampling factor f={ae_cfg.downsample}")
        cfg = self.config
        self.discriminator = PatchDiscriminator(ae_cfg.in_channels, cfg.disc_channels,
                                                cfg.disc_layers, cfg.disc_norm).to(self.device)
        self.batch_size = ctx.spec.train.batch_size
        self.grad_accum = ctx.spec.train.grad_accum
        self.world = ctx.world
        self.seed = ctx.spec.seed
        self.order = EpochOrder(len(self.dataset), self.seed, "autoencoder-order")

    @property
    def plot_keys(self) -> tuple[str, ...]:
        """Panels of ``plots/training.png`` (after ``setup``)."""
        vq = getattr(getattr(self, "autoencoder", None), "regularizer", "kl") == "vq"
        reg = ("perplexity", "commitment", "restarts") if vq else ("kl",)
        return ("loss", "rec_loss", *reg, "g_loss", "d_loss", "d_weight", "logits_real")

    def modules(self) -> dict[str, Any]:
        return {"autoencoder": self.autoencoder, "discriminator": self.discriminator}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = self.order.slice(start, count)
        images = stack_images(self.dataset, picks)
        return {"image": images.to(self.device), "step": index // self.grad_accum}

    # ------------------------------------------------------------------- loss

    def gan_active(self, step: int) -> bool:
        """True once optimiser step ``step`` (0-based) has reached ``disc_start``."""
        cfg = self.config
        return step >= cfg.disc_start and cfg.disc_factor > 0 and cfg.disc_weight > 0

    def generator_loss(self, x: Tensor, step: int) -> tuple[Tensor, Tensor, dict[str, float]]:
        """``(L_G, x̂, metrics)``: the autoencoder's loss on batch ``x`` at ``step``."""
        cfg = self.config
        ae = self.autoencoder
        out = ae(x)
        rec = out.reconstruction
        rec_loss = reconstruction_loss(x, rec.float(), cfg.rec_loss)
        metrics: dict[str, float] = {"rec_loss": rec_loss.item()}
        if out.posterior is not None:
            kl = out.posterior.kl().float()
            reg = cfg.kl_weight * kl_per_pixel(kl, x[0].numel())
            metrics["kl"] = kl.mean().item()
        else:
            q = out.quant
            reg = cfg.codebook_weight * q.loss.float()
            metrics.update(vq_loss=q.loss.item(), commitment=float(q.commitment),
                           perplexity=float(q.perplexity), restarts=float(q.restarts))
        loss = rec_loss + reg
        if self.gan_active(step):
            g_loss = hinge_g_loss(frozen_call(self.discriminator, rec).float())
            if torch.is_grad_enabled():
                weight = cfg.disc_weight * adaptive_weight(rec_loss, g_loss, ae.last_layer)
            else:  # (no gradients to balance, e.g. a no-grad evaluation pass)
                weight = torch.zeros((), device=x.device)
            loss = loss + cfg.disc_factor * weight * g_loss
            metrics.update(g_loss=g_loss.item(), d_weight=float(weight))
        return loss, rec, metrics

    def discriminator_loss(self, x: Tensor, rec: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``L_D`` on real ``x`` and detached reconstructions ``rec``."""
        logits_real = self.discriminator(x.detach()).float()
        logits_fake = self.discriminator(rec.detach()).float()
        d_loss = self.config.disc_factor * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d_loss": d_loss.item(), "logits_real": logits_real.mean().item(),
                        "logits_fake": logits_fake.mean().item()}

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        x, step = batch["image"], int(batch["step"])
        loss, rec, metrics = self.generator_loss(x, step)
        if self.gan_active(step):
            d_loss, d_metrics = self.discriminator_loss(x, rec)
            loss = loss + d_loss
            metrics.update(d_metrics)
        return loss, metrics

    # ------------------------------------------------------------- evaluation

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        cfg = self.config
        ae = self.autoencoder
        ae.eval()
        out: dict[str, float] = {}
        if not ae.scale_factor_fitted:
            self.fit_scale_factor(ctx)
        out["scale_factor"] = ae.scale_factor

        eval_ds = split_dataset(ctx, "eval")
        if eval_ds is None:
            eval_ds = self.dataset
            out["eval_on_train"] = 1.0
        n = min(cfg.eval_images, len(eval_ds))
        real = stack_images(eval_ds, range(n))
        rec, latent_sq, counts = self.reconstruct(real)
        out["eval_images"] = float(n)
        out["latent_std"] = math.sqrt(latent_sq)
        out["eval_l1"] = float((real - rec).abs().mean())
        out.update(pixel_metrics(real, rec))
        if counts is not None:
            out["codebook_usage"] = float((counts > 0).double().mean())
            from .vq import perplexity

            out["perplexity"] = float(perplexity(counts))
        if cfg.fd:
            out.update(self.rfd(ctx, eval_ds, real, rec))
        out["autoencoder_parameters"] = float(sum(p.numel() for p in ae.parameters()))
        out["discriminator_parameters"] = float(
            sum(p.numel() for p in self.discriminator.parameters()))
        if cfg.grid_images:
            k = min(cfg.grid_images, n)
            save_grid(torch.stack([real[:k], rec[:k]]), ctx.path("samples", "reconstructions.png"))
        return out

    def fit_scale_factor(self, ctx: RunContext) -> float:
        """Fit ``scale_factor`` on ``scale_images`` training images and re-export the
        autoencoder component with it."""
        ae = self.autoencoder
        n = min(self.config.scale_images, len(self.dataset))
        picks = rng(self.seed, "scale-factor-images").permutation(len(self.dataset))[:n]
        images = stack_images(self.dataset, picks.tolist())
        ae.fit_scale_factor(images.to(self.device), batch_size=self.config.eval_batch_size)
        if getattr(ae, "gaf_name", None):
            from gaf.components import save_component

            save_component(ae, ctx.run_dir / "autoencoder", kind="autoencoder")
        ctx.log(f"latent scale factor {ae.scale_factor:.4f} (from {n} training images)")
        return ae.scale_factor

    @torch.no_grad()
    def reconstruct(self, real: Tensor) -> tuple[Tensor, float, Tensor | None]:
        """Reconstructions (clamped, on the CPU), the mean squared latent value
        (around the mean) and, for VQ, per-code counts."""
        ae = self.autoencoder
        recs, zs = [], []
        counts = None
        for chunk in real.split(self.config.eval_batch_size):
            z = ae.encode(chunk.to(self.device))
            if hasattr(ae, "quantize"):
                batch_counts = ae.quantize(z).counts.double().cpu()
                counts = batch_counts if counts is None else counts + batch_counts
            recs.append(ae.decode(z).float().clamp(-1, 1).cpu())
            zs.append(z.double().flatten().cpu())
        z_all = torch.cat(zs)
        return torch.cat(recs), float(z_all.var()), counts

    def rfd(self, ctx: RunContext, eval_ds: Any, real: Tensor, rec: Tensor) -> dict[str, float]:
        """In-domain rFD, its real-vs-real floor and the feature net's accuracy."""
        try:
            from gaf.plugins.metrics.features import cached_feature_net
            from gaf.plugins.metrics.frechet import InDomainFD
        except ImportError:  # pragma: no cover - metrics plugin absent
            return {}
        cfg = self.config
        n = real.shape[0]
        if len(eval_ds) < 2 * n or eval_ds is self.dataset:
            ctx.log("rFD skipped: it needs a labelled eval split with 2 x eval_images images")
            return {}
        t0 = time.perf_counter()
        try:
            net = cached_feature_net(ctx.run_dir / "features", self.dataset, eval_ds,
                                     variant=cfg.fd_features, epochs=cfg.fd_epochs,
                                     seed=self.seed,
                                     max_train=cfg.fd_train_images or None, max_eval=2 * n,
                                     compute_floor=False)
        except BadData as exc:
            ctx.log(f"rFD skipped: {exc}")
            return {}
        metric = InDomainFD(net=net)
        real2 = stack_images(eval_ds, range(n, 2 * n))
        scores = metric(real, rec, real2)
        return {"rfd": scores["fd"], "rfd_floor": scores["fd_floor"],
                "feature_accuracy": scores["feature_accuracy"],
                "fd_s": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------- helpers


def pixel_metrics(real: Tensor, rec: Tensor) -> dict[str, float]:
    """PSNR and SSIM through gaf's metrics (PSNR by hand if they are not installed)."""
    import gaf

    out: dict[str, float] = {}
    try:
        out.update(gaf.create("metric", "psnr")(real, rec))
        out.update(gaf.create("metric", "ssim")(real, rec))
    except (ImportError, GafError, ValueError):
        mse = (real.double() - rec.double()).pow(2).flatten(1).mean(1).clamp_min(4e-10)
        out.setdefault("psnr", float((10 * torch.log10(4.0 / mse)).mean()))
    return out
