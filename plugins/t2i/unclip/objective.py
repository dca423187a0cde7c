"""``unclip``: DALL-E 2 (Ramesh et al. 2022), a diffusion prior from a caption to a CLIP
image embedding and a decoder from the embedding to an image.

``gaf run --objective unclip --dataset shapes`` trains, in one run directory:

1. **the generation CLIP** (:func:`gaf.plugins.clip.stage.clip_text_stage`): the frozen
   ``clip-text`` conditioner's CLIP, named with ``--set conditioner.clip=RUN_DIR`` or
   trained here for ``objective.clip_steps`` steps in ``RUN_DIR/clip/``. Its text tower
   gives the captions' states and unit text embeddings, its image tower the unit image
   embeddings the prior learns and the decoder is conditioned on. (The evaluation's CLIP
   is another one, see :mod:`gaf.plugins.clip.evaluation_clip`);
2. **the first stage** of the decoder, as ``ldm`` (:func:`~gaf.plugins.t2i.ldm.
   frozen_first_stage`): a trained ``kl-vae`` by default (a latent decoder, as Kandinsky
   2.2's), ``--autoencoder none`` for pixel space;
3. **the prior and the decoder, together**: one optimiser over both, each step's loss
   the sum of theirs (their parameters are disjoint, so each gets the gradient of its
   own loss; AdamW's update is per parameter; only the gradient-norm clipping, over all
   parameters, couples them), with an EMA of each;
4. **the evaluation** (:meth:`UnCLIP.evaluate`): the shared text-to-image evaluation
   of the ``unclip`` pipeline, plus the prior's quality and the paper's ablation.

Before the first step every training image is encoded once by the first stage (the
decoder's target, as ``ldm``) and by the CLIP image tower (unit embedding ``z_i``), and
every distinct caption once by the CLIP text tower (states, mask, unit embedding
``z_t``).

The decoder's loss
------------------
The LDM loss (``ldm``'s module doc) on the latents, with the UNet given the caption's
CLIP text states as cross-attention context and ``z_i`` as ``cond_vector`` (projected
into the time embedding and into ``extra_context_tokens`` = 4 extra context tokens:
``component_defaults`` sets ``cond_dim`` and ``extra_context_tokens`` of the default
``unet``). For classifier-free guidance ``z_i`` is replaced by zeros with probability
``p_drop_embedding`` (0.1) and, independently, the caption by the empty caption's
states with probability ``p_drop_text`` (0.5), the paper's rates. Logged:
``loss_decoder``.

The prior's loss
----------------
With ``x0 = standardize(z_i)`` (the prior's per-component statistics, fitted on the
training embeddings before the first step, see :mod:`gaf.plugins.diffusion.prior`),
``t ~ U{0, …, T−1}``, ``ε ~ N(0, I)`` and ``x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε`` under the
prior's scheduler (the run's training scheduler with ``prior_beta_schedule``, cosine by
default, as the paper's prior)::

    L_prior = mean ‖f(x_t, t, c) − x0‖²

(the target follows the prior's ``prediction_type``: x0 by default, the paper's),
where ``c`` (states, mask, ``z_t``) is the empty caption's with probability
``p_drop_prior_text`` (0.1). Logged: ``loss_prior`` and ``prior_cosine``, the mean
cosine of the predicted clean embedding (unstandardised) with ``z_i`` on the batch, the
figure users track rather than the loss.

``loss = loss_decoder + prior_weight · loss_prior``. Every random draw of step ``i``
comes from the run seed's ``"unclip-noise"`` stream at the micro-batch and the rank's
first position, the images from the ``"ldm-order"`` epoch order, so a resumed run
draws what the uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig
from gaf.runs import RunContext
from gaf.seeding import torch_generator

from ...diffusion.prior import PriorCondition
from ...diffusion.schedule_math import to_x0
from ...images.batches import stack_images
from ..ldm import LDM, LDMConfig, _plain

__all__ = ["UnCLIP", "UnCLIPConfig"]


@attrs.define
class UnCLIPConfig(LDMConfig):
    """Options of the ``unclip`` objective: ``ldm``'s, and the prior's and CLIP's."""

    p_drop_embedding: float = option(0.1, "probability of training the decoder with a zero "
                                          "image embedding (guidance)", ge=0, lt=1)
    p_drop_text: float = option(0.5, "probability of training the decoder with the empty "
                                     "caption (guidance)", ge=0, lt=1)
    p_drop_prior_text: float = option(0.1, "probability of training the prior with the "
                                           "empty caption (guidance)", ge=0, lt=1)
    prior_weight: float = option(1.0, "weight of the prior's loss in the sum", gt=0)
    prior_beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option(
        "squaredcos_cap_v2", "β schedule of the prior's diffusion (cosine, the paper's)")
    clip_steps: int = option(1000, "steps of the generation CLIP trained first when "
                                   "conditioner.clip names none", ge=1)
    eval_steps: int = option(25, "decoder sampling steps of the evaluation", ge=1)
    eval_guidance: tuple[float, ...] = option((1.0, 2.0, 3.0), "decoder guidance scales "
                                                                "evaluated", ge=0)
    fd_guidance: float = option(2.0, "the decoder's guidance scale of the headline row "
                                     "(FD/KID, floors, swapped pairs, diversity, "
                                     "variations; chosen on validation)", ge=0)
    eval_prior_steps: int = option(25, "prior sampling steps of the evaluation", ge=1)
    eval_prior_guidance: float = option(4.0, "the prior's guidance scale in the "
                                             "evaluation", ge=0)
    eval_prior_sweep: tuple[float, ...] = option(
        (1.0,), "further prior guidance scales evaluated (at fd_guidance)", ge=0)
    candidates: int = option(2, "prior samples per caption in the evaluation (the best "
                                "by similarity to the text embedding is kept)", ge=1)
    ablation: bool = option(True, "also evaluate the decoder fed the text embedding and "
                                  "the true image embedding (the paper's ablation)")
    variation_images: int = option(25, "eval images whose variations are scored (0 = "
                                       "none)", ge=0)
    variations_per_image: int = option(8, "variations made of each of them", ge=2)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.eval_prior_sweep = tuple(float(g) for g in self.eval_prior_sweep)


class UnCLIP(LDM):
    """unCLIP: the generation CLIP, a prior and a decoder (see the module docstring)."""

    Config = UnCLIPConfig
    uses = {**LDM.uses, "conditioner": "clip-text", "prior": "prior-transformer"}
    component_defaults = {"noise-model": {"cond_dim": 64, "extra_context_tokens": 4}}
    timeline = {"year": 2022, "method": "unCLIP (DALL-E 2)",
                "paper": "Ramesh et al., Hierarchical Text-Conditional Image Generation "
                         "with CLIP Latents (arXiv 2204.06125)"}
    pipeline_name = "unclip"
    train_defaults = {**LDM.train_defaults, "steps": 1500}
    plot_keys = ("loss", "loss_decoder", "loss_prior", "prior_cosine", "lr", "grad_norm")

    def __init__(self, config: UnCLIPConfig | None = None):
        self.config = config or UnCLIPConfig()

    # ------------------------------------------------------------------ setup

    def _conditioner(self, ctx: RunContext) -> Any:
        from ...clip.stage import clip_text_stage

        cond, self.clip_source = clip_text_stage(ctx, self.dataset, self.config.clip_steps)
        if not hasattr(cond, "text_condition"):
            raise BadConfig(f"unclip needs the clip-text conditioner (a frozen CLIP whose "
                            f"image tower gives the embeddings), not "
                            f"{ctx.spec.components['conditioner'].name!r}")
        return cond

    def _setup_more(self, ctx: RunContext) -> None:
        """The CLIP embeddings of the training data, the prior and its scheduler."""
        cfg = self.config
        clip = self.conditioner.clip
        self.embed_dim = clip.config.embed_dim
        self.prior = ctx.component("prior")
        self._check_prior(clip.config)
        self.image_embeddings = self._embed_images(ctx)
        unique = sorted(set(self.conditions))
        index = {c: i for i, c in enumerate(unique)}
        self.caption_index = torch.tensor([index[c] for c in self.conditions])
        parts = [self.conditioner.text_condition(unique[s:s + 500])
                 for s in range(0, len(unique), 500)]
        self.text_states, self.text_mask, self.text_pooled = (
            torch.cat([p[i] for p in parts]) for i in range(3))
        self.null_states, self.null_mask, self.null_pooled = \
            self.conditioner.text_condition([""])
        if not bool(self.prior.stats_fitted):
            self.prior.fit_embedding_stats(self.image_embeddings)
        self.prior_scheduler = type(self.scheduler).from_config(
            self.scheduler.config, beta_schedule=cfg.prior_beta_schedule,
            prediction_type=self.prior.prediction_type, clip_sample=False)
        ctx.log(f"unclip: {len(unique)} distinct captions, {self.embed_dim}-d CLIP "
                f"embeddings (clip {self.clip_source or 'named'}); prior "
                f"{sum(p.numel() for p in self.prior.parameters()):,} parameters")

    def _check_prior(self, clip_cfg: Any) -> None:
        p = self.prior.config
        want = {"embed_dim": clip_cfg.embed_dim, "text_width": clip_cfg.text_width,
                "text_length": clip_cfg.max_length}
        wrong = {k: v for k, v in want.items() if getattr(p, k) != v}
        if wrong:
            sets = " ".join(f"--set prior.{k}={v}" for k, v in wrong.items())
            raise BadConfig(f"the prior does not fit the CLIP ({want}): {sets}")
        nm = getattr(self.noise_model, "config", None)
        if nm is not None and (getattr(nm, "cond_dim", None) != clip_cfg.embed_dim
                               or not getattr(nm, "extra_context_tokens", 0)):
            raise BadConfig(f"the decoder must take the {clip_cfg.embed_dim}-d CLIP "
                            f"embedding: set noise-model.cond_dim={clip_cfg.embed_dim} and "
                            f"noise-model.extra_context_tokens=4 (got cond_dim="
                            f"{getattr(nm, 'cond_dim', None)}, extra_context_tokens="
                            f"{getattr(nm, 'extra_context_tokens', None)})")

    @torch.no_grad()
    def _embed_images(self, ctx: RunContext) -> Tensor:
        clip = self.conditioner.clip
        n, out = len(self.dataset), []
        for start in range(0, n, self.config.encode_batch_size):
            images = stack_images(self.dataset, range(start, min(n, start +
                                                                 self.config.encode_batch_size)))
            out.append(F.normalize(clip.encode_image(images.to(self.device)).float(), dim=-1))
        return torch.cat(out)

    def modules(self) -> dict[str, Any]:
        return {"noise_model": self.noise_model, "prior": self.prior, **self.ema}

    def _pipeline_meta(self, ctx: RunContext) -> dict[str, Any]:
        """``ldm``'s, naming the ``unclip`` pipeline, with the prior's scheduler."""
        return {**super()._pipeline_meta(ctx),
                "prior_scheduler": {"name": ctx.spec.components["scheduler"].name,
                                    "config": _plain(self.prior_scheduler.config)}}

    # ------------------------------------------------------------------- data

    def train_batch(self, index: int) -> dict[str, Any]:
        cfg = self.config
        start, count = self.world.shard(index * self.batch_size, self.batch_size)
        picks = torch.as_tensor(self.order.slice(start, count))
        gen = torch_generator(self.seed, "unclip-noise", index, start)
        T = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, T, (count,), generator=gen)
        noise = torch.randn((count, *self.sample_shape), generator=gen)
        drop_emb = torch.rand(count, generator=gen) < cfg.p_drop_embedding
        drop_text = torch.rand(count, generator=gen) < cfg.p_drop_text
        t_prior = torch.randint(0, self.prior_scheduler.config.num_train_timesteps, (count,),
                                generator=gen)
        noise_prior = torch.randn((count, self.embed_dim), generator=gen)
        drop_prior = torch.rand(count, generator=gen) < cfg.p_drop_prior_text
        d = self.device
        return {"z0": self.latents[picks], "embedding": self.image_embeddings[picks],
                "caption": self.caption_index[picks].to(d), "t": t.to(d),
                "noise": noise.to(d), "drop_embedding": drop_emb.to(d),
                "drop_text": drop_text.to(d), "t_prior": t_prior.to(d),
                "noise_prior": noise_prior.to(d), "drop_prior": drop_prior.to(d)}

    # ------------------------------------------------------------------- loss

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        loss_decoder = self.decoder_loss(batch)
        loss_prior, cosine = self.prior_loss(batch)
        loss = loss_decoder + self.config.prior_weight * loss_prior
        return loss, {"loss_decoder": float(loss_decoder.detach()),
                      "loss_prior": float(loss_prior.detach()), "prior_cosine": cosine}

    def decoder_loss(self, batch: dict[str, Any]) -> Tensor:
        """The decoder's MSE (see the module doc)."""
        z0, t, noise = batch["z0"], batch["t"], batch["noise"]
        sched = self.scheduler
        z_t = sched.add_noise(z0, noise, t)
        states = self.text_states[batch["caption"]]
        states = torch.where(batch["drop_text"][:, None, None], self.null_states.to(states),
                             states)
        emb = batch["embedding"]
        emb = torch.where(batch["drop_embedding"][:, None], torch.zeros_like(emb), emb)
        out = self.noise_model(z_t, t, states, cond_vector=emb)
        target = sched.training_target(z0, noise, t)
        return F.mse_loss(out.float(), target.float())

    def prior_loss(self, batch: dict[str, Any]) -> tuple[Tensor, float]:
        """The prior's MSE and the batch's mean cosine of its clean-embedding estimate
        with the true embedding (see the module doc)."""
        sched, prior = self.prior_scheduler, self.prior
        z = batch["embedding"]
        x0 = prior.standardize(z)
        t, noise = batch["t_prior"], batch["noise_prior"]
        x_t = sched.add_noise(x0, noise, t)
        i = batch["caption"]
        cond = PriorCondition(self.text_states[i], self.text_mask[i], self.text_pooled[i])
        null = PriorCondition(self.null_states, self.null_mask, self.null_pooled)
        cond = cond.where(~batch["drop_prior"], null)
        out = prior(x_t, t, cond)
        loss = F.mse_loss(out.float(), sched.training_target(x0, noise, t).float())
        with torch.no_grad():
            ab = sched.alphas_cumprod.to(out.device)[t].float()[:, None]
            x0_hat = to_x0(prior.prediction_type, out.detach().float(), x_t.float(), ab)
            cosine = F.cosine_similarity(prior.unstandardize(x0_hat), z, dim=-1).mean()
        return loss, float(cosine)

    # ------------------------------------------------------------- evaluation

    def pipeline(self, scheduler: str | None = None, ema: bool = True) -> Any:
        """An :class:`~.pipeline.UnCLIPPipeline` over this run's (EMA) modules."""
        import gaf

        from .pipeline import UnCLIPPipeline

        name = scheduler or self.config.eval_scheduler
        sched = gaf.REGISTRY.get("scheduler", name).from_config(_plain(self.scheduler.config))
        psched = gaf.REGISTRY.get("scheduler", name).from_config(
            _plain(self.prior_scheduler.config))
        return UnCLIPPipeline(self.sampling_module("noise_model", ema), sched,
                              prior=self.sampling_module("prior", ema), prior_scheduler=psched,
                              conditioner=self.conditioner, autoencoder=self.autoencoder,
                              sample_shape=self.sample_shape)

    def sampling_options(self, guidance: float | None = None,
                         prior_guidance: float | None = None) -> dict[str, Any]:
        """The evaluation's pipeline options (``fd_guidance`` and ``eval_prior_guidance``
        unless given)."""
        cfg = self.config
        return {"steps": cfg.eval_steps,
                "guidance": cfg.fd_guidance if guidance is None else guidance,
                "prior_steps": cfg.eval_prior_steps,
                "prior_guidance": (cfg.eval_prior_guidance if prior_guidance is None
                                   else prior_guidance),
                "candidates": cfg.candidates}

    def evaluation_settings(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The evaluation (``ldm``'s, of the EMA ``unclip`` pipeline) at ``fd_guidance``
        and ``eval_prior_guidance``, with the sweep ``g{s}`` (decoder guidance ``s``),
        ``prior_g{s}`` (prior guidance ``s``) and, with ``ablation``, ``text_embedding``
        (the decoder fed the text embedding: no prior)."""
        cfg = self.config
        options = self.sampling_options()
        sweep = {f"g{g:g}": self.sampling_options(guidance=g) for g in cfg.eval_guidance}
        sweep.update({f"prior_g{g:g}": self.sampling_options(prior_guidance=g)
                      for g in cfg.eval_prior_sweep})
        if cfg.ablation:
            sweep["text_embedding"] = {**options, "embedding": "text"}
        return options, sweep

    def _more_figures(self, ctx: RunContext, pipe: Any, options: dict[str, Any],
                      eval_ds: Any) -> dict[str, float]:
        """:func:`.evaluation.unclip_figures` (the prior's cosine and its floor, the true
        embedding route) and :func:`.evaluation.variation_figures`."""
        from .evaluation import unclip_figures, variation_figures

        cfg = self.config
        out = unclip_figures(pipe, options, train_ds=self.dataset, eval_ds=eval_ds,
                             n_captions=cfg.eval_images, seed=ctx.spec.seed,
                             batch_size=cfg.eval_batch_size, ablation=cfg.ablation)
        if cfg.variation_images:
            out.update(variation_figures(pipe, eval_ds=eval_ds, n_images=cfg.variation_images,
                                         per_image=cfg.variations_per_image,
                                         seed=ctx.spec.seed, batch_size=cfg.eval_batch_size,
                                         steps=cfg.eval_steps, guidance=cfg.fd_guidance))
        return out

    def _evaluation_info(self, ctx: RunContext) -> dict[str, float]:
        """``ldm``'s (the decoder and its first stage), with the prior counted as
        trainable, the CLIP's text and image towers as frozen, and the CLIP's training
        run added to ``train_wall_s`` when it was reused."""
        from ...clip.stage import reused_clip
        from ..evaluation import reused_run_seconds, train_wall_seconds
        from ..ldm import reused_first_stage

        trainable = sum(p.numel() for m in (self.noise_model, self.prior)
                        for p in m.parameters())
        frozen = (sum(p.numel() for p in self.autoencoder.parameters())
                  + sum(p.numel() for p in self.conditioner.clip.parameters()))
        seconds = (train_wall_seconds(ctx.run_dir, reused_first_stage(self.autoencoder_source))
                   + reused_run_seconds(reused_clip(self.clip_source)))
        return {"trainable_parameters": float(trainable), "frozen_parameters": float(frozen),
                "train_wall_s": round(seconds, 2)}
