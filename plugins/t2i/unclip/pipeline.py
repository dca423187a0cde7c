"""Sampling a trained unCLIP run: :class:`UnCLIPPipeline` (the ``unclip`` pipeline).

DALL-E 2 (Ramesh et al. 2022) makes an image from a caption in two stages::

    caption ──CLIP text tower──> states, unit text embedding z_t
            ──prior (diffusion over vectors)──> CLIP image embedding z_i (best of N)
            ──decoder (diffusion UNet, conditioned on z_i and the caption)──> latents
            ──first stage──> image

``pipe(captions, seed=0)`` runs both with its :class:`UnCLIPOptions`::

    from gaf.plugins.t2i.unclip.pipeline import UnCLIPPipeline

    pipe = UnCLIPPipeline.from_run("runs/2026-12-06-unclip-1a2b3c")
    images = pipe(["a red circle above a blue square"] * 4, seed=0)
    variations = pipe.variations(images[:1].expand(8, -1, -1, -1), seed=1)

or ``gaf sample --pipeline RUN_DIR --prompt "…"`` and ``gaf sample --pipeline RUN_DIR
--image picture.png -n 8``.

The prior stage (:meth:`UnCLIPPipeline.prior_embeddings`)
---------------------------------------------------------
Caption ``i``'s ``candidates`` rows start from noise drawn in turn from its generator
(``seed + i``) and are denoised by the prior's scheduler (``prior_steps`` steps, DDIM
unless the load option ``prior_scheduler`` names another), with classifier-free
guidance ``prior_guidance`` against the empty caption (its states, mask and
embedding: what the prior was trained with for a dropped caption). The caption's
prefix tokens are run once (:meth:`~gaf.plugins.diffusion.prior.PriorTransformer.
cache_context`). The result is unstandardised and made a unit vector (CLIP image
embeddings are unit vectors); of the candidates, the one with the largest dot product
with the unit text embedding is kept (the paper's "sample 2, keep the better").

``embedding="text"`` skips the prior and gives the decoder the *text* embedding in
place of the image embedding (the paper's ablation without a prior).

The decoder stage (:meth:`UnCLIPPipeline.decode_embeddings`)
------------------------------------------------------------
The decoder is a :class:`~gaf.plugins.diffusion.unet.UNet` with ``cond_dim`` (the
embedding added to its time embedding) and ``extra_context_tokens`` (4 tokens projected
from the embedding, appended to the caption's CLIP text states for cross-attention).
Classifier-free guidance ``guidance`` compares it with the unconditional input, the
empty caption's states and a zero embedding (the decoder was trained with the
embedding zeroed 10% and the caption dropped 50% of the time); the loop is
:func:`~gaf.plugins.t2i.diffusion_pipeline.denoise`, the LDM's. Image ``i``'s noise
comes from generator ``i`` after its prior draws, so an image depends on its caption
and seed only, not on its batch.

Variations (:meth:`UnCLIPPipeline.variations`)
----------------------------------------------
An image's unit CLIP image embedding (the run's generation CLIP) decoded with the
empty caption in both halves of the guidance: new images that keep what the
embedding holds of the original (``gaf sample --image``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.config import from_dict, option
from gaf.errors import BadConfig, BadData

from ..diffusion_pipeline import (DiffusionPipeline, call_inputs, denoise,
                                  initial_sample, load_parts, per_sample_generators,
                                  scheduler_from_meta)

__all__ = ["UnCLIPOptions", "UnCLIPPipeline"]


@attrs.define
class UnCLIPOptions:
    """The call options of :class:`UnCLIPPipeline`."""

    steps: int = option(25, "denoising steps of the decoder", ge=1)
    guidance: float = option(2.0, "the decoder's classifier-free guidance scale (against "
                                  "the empty caption and a zero embedding)", ge=0)
    prior_steps: int = option(25, "denoising steps of the prior", ge=1)
    prior_guidance: float = option(4.0, "the prior's classifier-free guidance scale "
                                        "(against the empty caption)", ge=0)
    candidates: int = option(2, "prior samples per caption; the one closest to the text "
                                "embedding is kept (the paper's 2)", ge=1)
    embedding: Literal["prior", "text"] = option(
        "prior", "what the decoder is given: prior (the sampled image embedding) or text "
                 "(the caption's CLIP text embedding, no prior: the paper's ablation)")


class UnCLIPPipeline(DiffusionPipeline):
    """Prior + decoder + first stage + the generation CLIP (see the module docstring).

    The registered pipeline ``unclip``: load a run with :meth:`from_run` (load options
    ``scheduler``, ``scheduler_options``, ``prior_scheduler``, ``ema``), call it with
    captions and :attr:`Options`, or make :meth:`variations` of images.
    """

    Options = UnCLIPOptions
    #: ``gaf sample --image`` makes :meth:`variations`; the decoder is conditioned on an
    #: image embedding, which the diffusion pipeline's RePaint (``edit``) does not build
    edit = None

    def inpaint(self, *args: Any, **options: Any) -> Tensor:
        """Not defined for unCLIP: RePaint needs the text context of an ``ldm`` decoder;
        inpaint with the run that trained one (``gaf sample --image … --mask …``)."""
        raise BadConfig("unclip does not inpaint (RePaint runs on an ldm or pixel-space "
                        "run); it makes variations of a picture")

    def __init__(self, noise_model: Any, scheduler: Any, *, prior: Any, prior_scheduler: Any,
                 conditioner: Any, autoencoder: Any = None,
                 sample_shape: Sequence[int] | None = None):
        super().__init__(noise_model, scheduler, autoencoder=autoencoder,
                         conditioner=conditioner, sample_shape=sample_shape)
        self.prior = prior
        self.prior_scheduler = prior_scheduler
        predicts = prior.prediction_type
        expects = getattr(prior_scheduler.config, "prediction_type", predicts)
        if predicts != expects:
            raise BadConfig(f"the prior predicts {predicts!r} but its scheduler is "
                            f"configured for {expects!r}")
        if not hasattr(conditioner, "text_condition"):
            raise BadConfig("the unclip pipeline needs a frozen CLIP text conditioner "
                            "(clip-text), whose CLIP also encodes images")

    # ------------------------------------------------------------- loading

    @classmethod
    def from_run(cls, run_dir: str | Path, *, scheduler: str | None = None,
                 scheduler_options: dict[str, Any] | None = None,
                 prior_scheduler: str | None = None, ema: bool = True,
                 device: Any = "cpu", registry: Any = None) -> UnCLIPPipeline:
        """Load an ``unclip`` run (``RUN_DIR/pipeline.json``): the decoder as
        :meth:`DiffusionPipeline.from_run` does (``scheduler``, ``scheduler_options``,
        ``ema``), plus the prior and its scheduler (``prior_scheduler`` names a
        registered one to sample with, built from the training one's config)."""
        from gaf.components import load_from
        from gaf.registry import REGISTRY

        from ..run_meta import module_dirs, read_meta

        registry = registry or REGISTRY
        meta = read_meta(run_dir, "unclip", "unclip")
        parts = load_parts(meta, scheduler=scheduler, scheduler_options=scheduler_options,
                           ema=ema, device=device, registry=registry)
        dirs = module_dirs(meta, ema, required=("noise_model", "prior"))
        prior = load_from(registry, "prior", dirs["prior"]).to(device).eval()
        psched = scheduler_from_meta(meta, "prior_scheduler", prior.prediction_type,
                                     name=prior_scheduler, registry=registry)
        return cls(prior=prior, prior_scheduler=psched, **parts)

    # ------------------------------------------------------------ sampling

    def options(self, **options: Any) -> UnCLIPOptions:
        return from_dict(self.Options, options, where="pipeline unclip")

    def evaluations_per_image(self, **options: Any) -> float:
        """The decoder's count (:meth:`DiffusionPipeline.evaluations_per_image`: its
        ``steps`` calls, ×2 guided, the first-stage decode and the text encoder) plus,
        with ``embedding="prior"``, ``prior_steps`` prior calls (×2 guided) per
        candidate."""
        opts = self.options(**options)
        count = super().evaluations_per_image(steps=opts.steps, guidance=opts.guidance)
        if opts.embedding == "prior":
            count += opts.candidates * opts.prior_steps * (2 if opts.prior_guidance != 1 else 1)
        return float(count)

    @torch.inference_mode()
    def __call__(self, conditions: Sequence[str], *, seed: int = 0,
                 generators: Sequence[torch.Generator] | None = None, progress: bool = False,
                 **options: Any) -> Tensor:
        """One image per caption, ``(B, C, H, W)`` in ``[-1, 1]`` (see the module doc)."""
        opts = self.options(**options)
        captions, generators = call_inputs(conditions, seed, generators)
        text = self.conditioner.text_condition(captions)
        if opts.embedding == "text":
            embeddings = text[2]
        else:
            embeddings = self.prior_embeddings(captions, generators=generators,
                                               steps=opts.prior_steps,
                                               guidance=opts.prior_guidance,
                                               candidates=opts.candidates, text=text)
        return self.decode_embeddings(embeddings, captions, generators=generators,
                                      steps=opts.steps, guidance=opts.guidance,
                                      states=text[0], progress=progress)

    @torch.inference_mode()
    def prior_embeddings(self, captions: Sequence[str], *,
                         generators: Sequence[torch.Generator], steps: int = 25,
                         guidance: float = 4.0, candidates: int = 2,
                         text: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """``(B, E)`` unit CLIP image embeddings sampled by the prior for ``captions``,
        the best of ``candidates`` per caption (see the module doc); generator ``i``
        draws caption ``i``'s noise. ``text`` is ``conditioner.text_condition(captions)``
        when already computed."""
        from gaf.plugins.diffusion.prior import PriorCondition

        n, k = len(captions), int(candidates)
        states, mask, pooled = text if text is not None else \
            self.conditioner.text_condition(list(captions))
        cond = PriorCondition(states, mask, pooled)
        rows = [g for g in generators for _ in range(k)]
        cond = PriorCondition(*(v.repeat_interleave(k, dim=0) for v in attrs.astuple(
            cond, recurse=False)))
        guided = guidance != 1.0
        context: Any = cond
        if guided:
            null = PriorCondition(*(v.expand(n * k, *v.shape[1:]) for v in
                                    self.conditioner.text_condition([""])))
            context = PriorCondition.cat([null, cond])
        context = self.prior.cache_context(context.to(self.device))
        sched = self.prior_scheduler
        x = initial_sample(sched, steps, (self.prior.embed_dim,), rows, self.device,
                           option="prior_steps")
        x = denoise(self.prior, sched, x, context, guidance=guidance, guided=guided,
                    generators=rows)
        emb = F.normalize(self.prior.unstandardize(x).float(), dim=-1)
        if k == 1:
            return emb
        emb = emb.view(n, k, -1)
        best = (emb * pooled.to(emb)[:, None]).sum(-1).argmax(dim=1)
        return emb[torch.arange(n), best]

    @torch.inference_mode()
    def decode_embeddings(self, embeddings: Tensor, captions: Sequence[str] | None = None, *,
                          generators: Sequence[torch.Generator] | None = None, seed: int = 0,
                          steps: int = 25, guidance: float = 2.0,
                          states: Tensor | None = None, progress: bool = False,
                          decode: bool = True) -> Tensor:
        """Images from ``(B, E)`` CLIP embeddings by the decoder, conditioned on
        ``captions`` too (None: the empty caption, as for variations); guidance against
        the empty caption with a zero embedding. ``states`` are the captions' CLIP text
        states when already computed."""
        e = self._check_embeddings(embeddings)
        n = len(e)
        generators = (list(generators) if generators is not None
                      else per_sample_generators(seed, n))
        if len(generators) != n:
            raise BadConfig(f"{len(generators)} generators for {n} embeddings")
        null = self.conditioner.null(n)
        if states is None:
            states = null if captions is None else self.conditioner(list(captions))
        if len(states) != n:
            raise BadConfig(f"{len(states)} captions for {n} embeddings")
        model, sched = self.noise_model, self.scheduler
        x = initial_sample(sched, steps, self.sample_shape, generators, self.device)
        guided = guidance != 1.0
        e = e.to(self.device)
        if guided:
            context = torch.cat([null.to(states), states])
            vector = torch.cat([torch.zeros_like(e), e])
        else:
            context, vector = states, e
        context = model.cache_context(context.to(self.device), cond_vector=vector) \
            if hasattr(model, "cache_context") else context
        x = denoise(model, sched, x, context, guidance=guidance, guided=guided,
                    generators=generators, model_kwargs={"cond_vector": vector},
                    progress=progress)
        return self.decode(x) if decode else x

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images :meth:`variations` takes (the CLIP's input)."""
        cfg = self.conditioner.clip.config
        return (cfg.in_channels, cfg.resolution, cfg.resolution)

    @torch.inference_mode()
    def image_embeddings(self, images: Tensor) -> Tensor:
        """``(B, E)`` unit CLIP image embeddings of images in ``[-1, 1]`` (the run's
        generation CLIP: the embedding the decoder was trained on)."""
        clip = self.conditioner.clip
        want = self.image_shape
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != want:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise BadData(f"unclip: images must be (B, {want[0]}, {want[1]}, {want[2]}) in "
                          f"[-1, 1], got {got}")
        return F.normalize(clip.encode_image(images.to(self.device)).float(), dim=-1)

    @torch.inference_mode()
    def variations(self, images: Tensor, *, seed: int = 0,
                   generators: Sequence[torch.Generator] | None = None,
                   progress: bool = False, **options: Any) -> Tensor:
        """One new image per input image, decoded from the input's CLIP image embedding
        with the empty caption (see the module doc); ``options`` are :attr:`Options`'
        (``steps``, ``guidance``; the prior's are checked but do not apply)."""
        opts = self.options(**options)
        emb = self.image_embeddings(images)
        return self.decode_embeddings(emb, None, generators=generators, seed=seed,
                                      steps=opts.steps, guidance=opts.guidance,
                                      progress=progress)

    def _check_embeddings(self, embeddings: Any) -> Tensor:
        d = self.prior.embed_dim
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or \
                embeddings.shape[1] != d:
            got = (tuple(embeddings.shape) if isinstance(embeddings, Tensor)
                   else type(embeddings).__name__)
            raise BadConfig(f"embeddings must be (B, {d}) CLIP embeddings, got {got}")
        if len(embeddings) == 0:
            raise BadConfig("nothing to sample: no embeddings given")
        return embeddings.float()
