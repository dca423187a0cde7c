"""Sampling a trained diffusion model: :class:`DiffusionPipeline`.

A pipeline is a noise model, a conditioner (or none), a first stage (an autoencoder,
or ``none`` for pixel space) and a scheduler. ``pipe(prompts, steps=50, guidance=3,
seed=0)`` returns images ``(B, C, H, W)`` in ``[-1, 1]``::

    from gaf.plugins.t2i.diffusion_pipeline import DiffusionPipeline

    pipe = DiffusionPipeline.from_run("runs/2026-11-26-ldm-1a2b3c", scheduler="ddim")
    images = pipe(["a red circle above a blue square"] * 4, steps=50, guidance=3, seed=0)

or ``gaf sample --pipeline RUN_DIR --prompt "…" --scheduler ddim --steps 50 --guidance 3
--seed 0 --out grid.png``.

The sampling loop
-----------------
1. The conditions are encoded once; the unconditional embedding ``conditioner.null``
   is computed once for the whole batch. With a noise model that offers
   ``cache_context``, the cross-attention keys and values of ``[null; cond]`` are
   projected once too, not at every step.
2. Image ``i`` of the batch draws its initial noise, and every later noise of a
   stochastic scheduler, from its own generator seeded ``seed + i``: a prompt's image
   does not depend on the batch it is sampled in or on the batch size.
3. Per timestep ``t``, classifier-free guidance (Ho & Salimans 2022) runs the
   unconditional and conditional halves in **one** batched call over
   ``[x; x]`` with context ``[null; cond]`` and combines
   ``out = out_u + s·(out_c − out_u)``. With ``s = 1`` that is the conditional
   prediction, so the unconditional half is skipped (half the work). The guided
   output is in the noise model's parameterisation (ε, v or x0), which the scheduler
   was configured for.
4. ``scheduler.step`` gives the previous sample (a multistep scheduler gets a fresh
   ``state`` dict per call, see :class:`gaf.interfaces.Scheduler`). Then the
   :func:`gaf.hookspecs.gaf_sample_step` hook and the ``callback`` argument may
   replace the latents (e.g. paste known pixels back).
5. The final latents are divided by the first stage's ``scale_factor`` and decoded,
   then clamped to ``[-1, 1]``.

The ``pipeline`` kind
---------------------
:class:`DiffusionPipeline` is the registered pipeline ``diffusion`` and meets
:class:`gaf.interfaces.Pipeline`: its call options are :class:`DiffusionPipeline.Options`
(``steps``, ``guidance``; ``gaf show pipeline diffusion`` lists them), the sampling
scheduler and the EMA switch are load options of :meth:`~DiffusionPipeline.from_run`,
and :meth:`~DiffusionPipeline.evaluations_per_image` counts the network evaluations
one image costs: a denoiser call per step (two with classifier-free guidance, the
``[uncond; cond]`` pair, even though it is one batched call), plus one first-stage
decode (none in pixel space, where the first stage has no parameters) and one
condition-encoder call (when there is a conditioner).

Inpainting (RePaint)
--------------------
``pipe.inpaint(conditions, images, masks, steps=50, guidance=3, jump_length=2,
jump_n_sample=10, seed=0)`` fills the holes of ``images`` ``(B, C, H, W)`` in
``[-1, 1]`` (:attr:`~DiffusionPipeline.image_shape`) with any trained run, latent or
pixel space, without retraining: RePaint (Lugmayr et al. 2022), whose maths, schedule
and defaults :mod:`gaf.plugins.diffusion.repaint` documents. ``masks`` ``(B, 1, H, W)``
are exact 0s and 1s, **1 where the image is generated**; a caption of ``None`` or
``""`` fills unconditionally (the conditioner's ``null``). The known region is
re-noised and pasted after every denoising step, the sampler jumps back
``jump_length`` levels ``jump_n_sample − 1`` times at each jump point, and the ground
truth is pasted into the decoded image, so the known pixels of the result are the
input's exactly. The options are :attr:`~DiffusionPipeline.InpaintOptions`; the paste
alone is :meth:`~DiffusionPipeline.known_region`, a step callback for a plain call
(RePaint without resampling); :meth:`~DiffusionPipeline.inpaint_evaluations_per_image`
counts its network evaluations.

A run directory
---------------
:meth:`DiffusionPipeline.from_run` reads ``RUN_DIR/pipeline.json``, written by the
``ldm`` objective: which exported modules to use (the EMA copies by default), where
the first stage is, the training scheduler's config and the sample shape. A scheduler
named at sampling time is built from that config with ``from_config``, so a run
trained with ``ddpm`` samples with ``ddim`` or a plugin's scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, BadData, GafError
from gaf.plugins.diffusion import repaint as _repaint
from gaf.plugins.diffusion.step_callback import replacement as _replacement

from .run_meta import PIPELINE_FILE

__all__ = ["DiffusionOptions", "DiffusionPipeline", "InpaintOptions", "call_inputs",
           "check_prediction", "denoise",
           "guided_prediction", "initial_sample", "load_parts", "per_sample_generators",
           "predictor", "scheduler_from_meta", "scheduler_record",
           "PIPELINE_FILE"]

StepCallback = Callable[[int, int, Tensor], Any]


def check_prediction(noise_model: Any, scheduler: Any) -> None:
    """A :class:`BadConfig` unless ``scheduler`` is configured for what ``noise_model``
    predicts (ε, v or x0): every pipeline's constructor runs it."""
    predicts = getattr(noise_model, "prediction_type", "epsilon")
    expects = getattr(getattr(scheduler, "config", None), "prediction_type", predicts)
    if predicts != expects:
        raise BadConfig(f"the noise model predicts {predicts!r} but the scheduler is "
                        f"configured for {expects!r}")


def per_sample_generators(seed: int, n: int, device: Any = "cpu") -> list[torch.Generator]:
    """``n`` generators seeded ``seed, seed + 1, …`` (one per image)."""
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]


def call_inputs(conditions: Sequence[Any], seed: int,
                generators: Sequence[torch.Generator] | None
                ) -> tuple[list[Any], list[torch.Generator]]:
    """A pipeline call's conditions as a list and one generator per condition (``seed +
    i`` unless ``generators`` are given); a :class:`~gaf.errors.BadConfig` for no
    conditions or a generator count that does not match (every pipeline kind's
    prologue)."""
    conditions = list(conditions)
    if not conditions:
        raise BadConfig("nothing to sample: no prompts given")
    generators = (list(generators) if generators is not None
                  else per_sample_generators(seed, len(conditions)))
    if len(generators) != len(conditions):
        raise BadConfig(f"{len(generators)} generators for {len(conditions)} conditions")
    return conditions, generators


def per_sample_noise(shape: Sequence[int], generators: Sequence[torch.Generator],
                     device: Any, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(generators), *shape)`` standard normal noise, row ``i`` from generator ``i``."""
    rows = [torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype)
            for g in generators]
    return torch.stack(rows).to(device)


def initial_sample(sched: Any, steps: int, shape: Sequence[int],
                   generators: Sequence[torch.Generator], device: Any,
                   option: str = "steps") -> Tensor:
    """Set ``sched``'s timesteps for ``steps`` (its ``ValueError``, e.g. more steps than
    it was trained with, becomes a :class:`~gaf.errors.BadConfig` naming ``option``) and
    return the first sample: noise ``(len(generators), *shape)``, row ``i`` from
    generator ``i``, times the scheduler's ``init_noise_sigma``."""
    try:
        sched.set_timesteps(int(steps))
    except ValueError as exc:
        raise BadConfig(f"{option}={steps}: {exc}") from None
    x = per_sample_noise(shape, generators, device)
    return x * float(getattr(sched, "init_noise_sigma", 1.0))


def guided_prediction(model: Any, x: Tensor, t: Any, cond: Any, null: Any,
                      guidance: float, *, batched: bool = True, **model_kwargs: Any) -> Tensor:
    """Classifier-free guidance ``out_u + guidance·(out_c − out_u)``.

    ``cond``/``null`` are the model's context for the conditional and unconditional
    halves: tensors ``(B, L, D)``, or, when ``batched``, one context for the stacked
    batch ``[null; cond]`` (a tensor ``(2B, L, D)`` or a ``cache_context`` object)
    passed as ``cond`` with ``null=None``. Unbatched, ``guidance == 1`` returns the
    conditional prediction from a single call (the sampler skips the unconditional
    half at ``s = 1`` the same way). ``model_kwargs`` go to every call as they are
    (batched: already stacked ``[null; cond]``, e.g. unCLIP's ``cond_vector``).
    """
    if batched:
        out_u, out_c = model(torch.cat([x, x]), t, cond, **model_kwargs).chunk(2)
    elif guidance == 1.0:
        return model(x, t, cond, **model_kwargs)
    else:
        out_u, out_c = model(x, t, null, **model_kwargs), model(x, t, cond, **model_kwargs)
    return out_u + guidance * (out_c - out_u)


def predictor(model: Any, context: Any, *, guidance: float, guided: bool,
              model_kwargs: dict[str, Any] | None = None) -> Callable[[Tensor, Any], Tensor]:
    """``predict(x, t)``: the model's output at ``(x, t)`` for one sampling step (step 3
    of the module doc): ``guided``, one batched call over ``[x; x]`` with ``context``
    and ``model_kwargs`` for ``[null; cond]``, combined at ``guidance``; otherwise one
    call with ``context``. Shared by :func:`denoise` and RePaint
    (:meth:`DiffusionPipeline.inpaint`)."""
    kwargs = model_kwargs or {}
    if guided:
        return lambda x, t: guided_prediction(model, x, t, context, None, guidance, **kwargs)
    return lambda x, t: model(x, t, context, **kwargs)


def denoise(model: Any, sched: Any, x: Tensor, context: Any, *, guidance: float,
            guided: bool, generators: Sequence[torch.Generator],
            model_kwargs: dict[str, Any] | None = None, hook: Callable[..., Any] | None = None,
            callback: StepCallback | None = None, progress: bool = False) -> Tensor:
    """The denoising loop (steps 3 and 4 of the module doc) from the initial sample
    ``x`` over the timesteps ``sched.set_timesteps`` chose: per step the model's output
    (``guided``: one batched call over ``[x; x]`` with ``context`` and ``model_kwargs``
    for ``[null; cond]``, combined at ``guidance``), ``scheduler.step``, then ``hook``
    and ``callback`` may replace the sample. Used for images and for unCLIP's prior
    (vectors: nothing here depends on the sample's shape)."""
    predict = predictor(model, context, guidance=guidance, guided=guided,
                        model_kwargs=model_kwargs)
    state = sched.new_state() if hasattr(sched, "new_state") else None
    step_kwargs: dict[str, Any] = {"generator": list(generators)}
    if state is not None:
        step_kwargs["state"] = state
    scale_input = getattr(sched, "scale_model_input", None)
    timesteps = [int(t) for t in sched.timesteps]
    bar = _progress_bar(len(timesteps)) if progress else None
    try:
        for i, t in enumerate(timesteps):
            x_in = scale_input(x, t) if scale_input is not None else x
            x = sched.step(predict(x_in, t), t, x, **step_kwargs)
            if hook is not None:
                new = hook(step=i, timestep=t, latents=x)
                x = _replacement(new, x, "the gaf_sample_step hook")
            if callback is not None:
                x = _replacement(callback(i, t, x), x, "the step callback")
            if bar is not None:
                bar.advance()
    finally:
        if bar is not None:
            bar.close()
    return x


@attrs.define
class DiffusionOptions:
    """The call options of :class:`DiffusionPipeline` (``pipe(conds, steps=, guidance=)``)."""

    steps: int = option(50, "denoising steps (the scheduler's timesteps)", ge=1)
    guidance: float = option(3.0, "classifier-free guidance scale s: out_u + s·(out_c − out_u); "
                             "1 = the conditional prediction alone (half the work)", ge=0)


@attrs.define
class InpaintOptions(DiffusionOptions):
    """The options of :meth:`DiffusionPipeline.inpaint` (RePaint,
    :mod:`gaf.plugins.diffusion.repaint`): ``steps`` and ``guidance`` as for sampling,
    plus the jump schedule's ``jump_length`` and ``jump_n_sample``."""

    jump_length: int = option(_repaint.JUMP_LENGTH, "RePaint's jump length j: grid levels "
                              "climbed back up at each jump point (the paper: 10 of 250 "
                              "steps)", ge=1)
    jump_n_sample: int = option(_repaint.JUMP_N_SAMPLE, "RePaint's resamplings r: times each "
                                "jump point is passed (the paper: 10); 1 = no resampling, "
                                "the known region pasted at every step", ge=1)


class DiffusionPipeline:
    """Noise model + conditioner + first stage + scheduler → images (see the module doc).

    The registered pipeline ``diffusion`` (:class:`gaf.interfaces.Pipeline`): load a run
    with :meth:`from_run` (load options ``scheduler``, ``scheduler_options``, ``ema``),
    call it with ``steps`` and ``guidance`` (:attr:`Options`).
    :meth:`inpaint` fills the holes of images (RePaint, options :attr:`InpaintOptions`).
    """

    #: the call's options, shown by ``gaf show pipeline diffusion``
    Options = DiffusionOptions
    #: the options of :meth:`inpaint`
    InpaintOptions = InpaintOptions
    #: ``gaf sample --image … --mask …`` checks its ``--option``\ s against these
    EditOptions = InpaintOptions
    #: :meth:`edit` needs a mask (it fills holes; it does not translate whole pictures)
    uses_masks = True

    def __init__(self, noise_model: Any, scheduler: Any, *, autoencoder: Any = None,
                 conditioner: Any = None, sample_shape: Sequence[int] | None = None):
        self.noise_model = noise_model
        self.scheduler = scheduler
        self.autoencoder = autoencoder
        self.conditioner = conditioner
        #: ``(C, h, w)`` of one sample in the noise model's space (latents or pixels)
        self.sample_shape = tuple(sample_shape) if sample_shape else None
        check_prediction(noise_model, scheduler)

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
                 device: Any = "cpu", registry: Any = None) -> DiffusionPipeline:
        """Load the pipeline of an ``ldm`` run (``RUN_DIR/pipeline.json``).

        ``scheduler`` names a registered scheduler to sample with (default: the one
        the run was trained with), built ``from_config`` of the training scheduler's
        config plus ``scheduler_options``; ``ema=False`` takes the raw trained weights
        instead of their moving average.
        """
        from .run_meta import read_meta

        meta = read_meta(run_dir, "diffusion", "ldm")
        return cls(**load_parts(meta, scheduler=scheduler, scheduler_options=scheduler_options,
                                ema=ema, device=device, registry=registry))

    # ------------------------------------------------------------ sampling

    def encode(self, conditions: Sequence[Any]) -> tuple[Tensor | None, Tensor | None]:
        """``(cond, null)`` context states of ``conditions`` (``(None, None)`` without a
        conditioner); ``null`` is computed once for the batch."""
        if self.conditioner is None:
            return None, None
        cond = self.conditioner(list(conditions))
        return cond, self.conditioner.null(len(conditions)).to(cond)

    @torch.inference_mode()
    def __call__(self, conditions: Sequence[Any], *, steps: int = 50, guidance: float = 3.0,
                 seed: int = 0, generators: Sequence[torch.Generator] | None = None,
                 callback: StepCallback | None = None, progress: bool = False,
                 decode: bool = True, hooks: bool = True) -> Tensor:
        """Sample one image per condition (see the module docstring for the loop).

        ``generators`` (one per condition) replace the default ``seed + i`` ones;
        ``callback(step, t, latents)`` may return replacement latents; ``decode=False``
        returns the final (scaled) latents instead of images.
        """
        conditions, generators = call_inputs(conditions, seed, generators)
        n = len(conditions)
        opts = self.options(steps=steps, guidance=guidance)
        steps, guidance = opts.steps, opts.guidance
        if self.sample_shape is None:
            raise BadConfig("the pipeline does not know the sample shape (sample_shape=)")
        model = self.noise_model
        sched = self.scheduler
        x = initial_sample(sched, steps, self.sample_shape, generators, self.device)
        cond, null = self.encode(conditions)
        guided = cond is not None and guidance != 1.0
        context: Any = torch.cat([null, cond]) if guided else cond
        if context is not None and hasattr(model, "cache_context"):
            context = model.cache_context(context)
        x = denoise(model, sched, x, context, guidance=guidance, guided=guided,
                    generators=generators, hook=_sample_hook() if hooks else None,
                    callback=callback, progress=progress)
        if not decode:
            return x
        return self.decode(x)

    def options(self, **options: Any) -> DiffusionOptions:
        """:attr:`Options` with ``options`` applied: checked and coerced, an unknown
        name a :class:`~gaf.errors.BadConfig` naming the known ones."""
        from gaf.config import from_dict

        return from_dict(self.Options, options, where="pipeline diffusion")

    def evaluations_per_image(self, **options: Any) -> float:
        """Network evaluations to make one image at ``options`` (see the module doc):
        ``steps`` denoiser calls, ×2 when guided (a conditioner and ``guidance != 1``:
        the CFG pair counts 2), + 1 first-stage decode when the first stage has
        parameters, + 1 condition-encoder call when there is a conditioner."""
        opts = self.options(**options)
        guided = self.conditioner is not None and opts.guidance != 1.0
        evaluations = opts.steps * (2 if guided else 1)
        if self.autoencoder is not None and _has_parameters(self.autoencoder):
            evaluations += 1
        if self.conditioner is not None:
            evaluations += 1
        return float(evaluations)

    def decode(self, latents: Tensor, batch_size: int = 64) -> Tensor:
        """Images in ``[-1, 1]`` from scaled latents (``autoencoder.decode(z / scale)``)."""
        if self.autoencoder is None:
            return latents.clamp(-1, 1)
        scale = float(getattr(self.autoencoder, "scale_factor", 1.0))
        out = [self.autoencoder.decode(chunk / scale).float().clamp(-1, 1)
               for chunk in latents.split(batch_size)]
        return torch.cat(out)

    # ---------------------------------------------------------- inpainting

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of the images the pipeline makes: :attr:`sample_shape` scaled by
        the first stage's ``config.downsample`` (``None`` when it does not say)."""
        if self.sample_shape is None:
            return None
        if self.autoencoder is None:
            return tuple(self.sample_shape)  # type: ignore[return-value]
        config = getattr(self.autoencoder, "config", None)
        factor = getattr(config, "downsample", None)
        channels = getattr(config, "in_channels", None)
        if not isinstance(factor, int) or not isinstance(channels, int):
            return None
        _, h, w = self.sample_shape
        return (channels, h * factor, w * factor)

    def inpaint_options(self, **options: Any) -> InpaintOptions:
        """:attr:`InpaintOptions` with ``options`` applied (checked as :meth:`options`)."""
        from gaf.config import from_dict

        return from_dict(self.InpaintOptions, options, where="pipeline diffusion inpaint")

    @torch.inference_mode()
    def known_region(self, images: Tensor, masks: Tensor, *, seed: int = 0,
                     generators: Sequence[torch.Generator] | None = None
                     ) -> _repaint.KnownRegion:
        """RePaint's paste for ``images`` and ``masks`` (checked as :meth:`inpaint` checks
        them), a step callback: ``pipe(conditions, generators=paste.generators,
        callback=paste, decode=False)`` then ``paste.finish(pipe.decode(latents))`` is
        RePaint without resampling. ``generators`` (one per image) default to ``seed +
        i``."""
        generators = list(generators) if generators is not None else None
        images = _repaint.check_images(images, None if generators is None else len(generators),
                                       self.image_shape)
        if generators is None:
            generators = per_sample_generators(seed, images.shape[0])
        from .image_to_image.masks import check_masks

        masks = check_masks(masks, images, where="masks")
        paste = _repaint.KnownRegion.from_images(self.scheduler, images, masks, generators,
                                                 autoencoder=self.autoencoder,
                                                 device=self.device)
        if self.sample_shape is not None and tuple(paste.known.shape[1:]) != self.sample_shape:
            raise BadData(f"images: the first stage encodes them to "
                          f"{tuple(paste.known.shape[1:])}, the noise model samples "
                          f"{self.sample_shape}")
        return paste

    @torch.inference_mode()
    def inpaint(self, conditions: Sequence[Any], images: Tensor, masks: Tensor, *,
                steps: int = 50, guidance: float = 3.0,
                jump_length: int = _repaint.JUMP_LENGTH,
                jump_n_sample: int = _repaint.JUMP_N_SAMPLE, seed: int = 0,
                generators: Sequence[torch.Generator] | None = None,
                callback: StepCallback | None = None, progress: bool = False,
                hooks: bool = True) -> Tensor:
        """Fill the holes of ``images`` with RePaint (:mod:`gaf.plugins.diffusion.repaint`).

        ``images`` ``(B, C, H, W)`` floats in [-1, 1] of :attr:`image_shape`; ``masks``
        ``(B, 1, H, W)`` of exact 0s and 1s, **1 where the image is generated**, neither
        empty nor full; one condition per image (``None`` or an empty caption: the
        conditioner's ``null``, an unconditional fill). Returns ``(B, C, H, W)`` in
        [-1, 1] in the images' dtype, whose known pixels are the input's exactly.
        ``generators``, ``seed``, ``callback`` (after every denoising step, after the
        paste), ``progress`` and ``hooks`` are as for ``__call__``.
        """
        conditions, generators = call_inputs(conditions, seed, generators)
        opts = self.inpaint_options(steps=steps, guidance=guidance, jump_length=jump_length,
                                    jump_n_sample=jump_n_sample)
        if self.sample_shape is None:
            raise BadConfig("the pipeline does not know the sample shape (sample_shape=)")
        paste = self.known_region(images, masks, generators=generators)
        x = initial_sample(self.scheduler, opts.steps, self.sample_shape, generators,
                           self.device)
        context, guided = self._inpaint_context(conditions, opts.guidance)
        predict = predictor(self.noise_model, context, guidance=opts.guidance, guided=guided)
        bar = (_progress_bar(_repaint.denoising_steps(opts.steps, opts.jump_length,
                                                      opts.jump_n_sample))
               if progress else None)
        try:
            x = _repaint.repaint(predict, self.scheduler, x, paste,
                                 jump_length=opts.jump_length, jump_n_sample=opts.jump_n_sample,
                                 generators=generators, hook=_sample_hook() if hooks else None,
                                 callback=callback, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        return paste.finish(self.decode(x))

    def edit(self, images: Tensor, *, masks: Tensor, conditions: Sequence[Any] | None = None,
             seed: int = 0, generators: Sequence[torch.Generator] | None = None,
             progress: bool = False, **options: Any) -> Tensor:
        """``gaf sample --image … --mask …``'s entry: :meth:`inpaint` with the captions
        ``conditions`` (``None``: no caption for any picture, an unconditional fill)."""
        if conditions is None:
            conditions = [None] * len(images)
        return self.inpaint(conditions, images, masks, seed=seed, generators=generators,
                            progress=progress, **options)

    def inpaint_evaluations_per_image(self, **options: Any) -> float:
        """Network evaluations of one :meth:`inpaint` image at ``options`` (captioned):
        :func:`~gaf.plugins.diffusion.repaint.denoising_steps` denoiser calls, ×2 when
        guided, + 2 first-stage calls (encode and decode) when it has parameters, + 1
        condition-encoder call when there is a conditioner."""
        opts = self.inpaint_options(**options)
        guided = self.conditioner is not None and opts.guidance != 1.0
        calls = _repaint.denoising_steps(opts.steps, opts.jump_length, opts.jump_n_sample)
        evaluations = calls * (2 if guided else 1)
        if self.autoencoder is not None and _has_parameters(self.autoencoder):
            evaluations += 2
        if self.conditioner is not None:
            evaluations += 1
        return float(evaluations)

    def _inpaint_context(self, conditions: Sequence[Any], guidance: float) -> tuple[Any, bool]:
        """The denoiser's context for :meth:`inpaint` and whether it is guided: ``None``
        and empty captions take the ``null`` states; with no caption at all the fill is
        unconditional (one unguided call per step)."""
        if self.conditioner is None:
            return None, False
        blank = [c is None or (isinstance(c, str) and not c.strip()) for c in conditions]
        null = self.conditioner.null(len(conditions))
        if all(blank):
            context: Any = null.contiguous()
            guided = False
        else:
            rows = [i for i, b in enumerate(blank) if not b]
            encoded = self.conditioner([conditions[i] for i in rows])
            null = null.to(encoded)
            cond = null.clone()
            cond[rows] = encoded
            guided = guidance != 1.0
            context = torch.cat([null, cond]) if guided else cond
        if hasattr(self.noise_model, "cache_context"):
            context = self.noise_model.cache_context(context)
        return context, guided


def load_parts(meta: Any, *, scheduler: str | None = None,
               scheduler_options: dict[str, Any] | None = None, ema: bool = True,
               device: Any = "cpu", registry: Any = None) -> dict[str, Any]:
    """The keyword arguments of :class:`DiffusionPipeline` (``noise_model``,
    ``scheduler``, ``autoencoder``, ``conditioner``, ``sample_shape``) loaded from a
    checked ``pipeline.json`` (:class:`~.run_meta.RunMeta`) with the load options of
    :meth:`DiffusionPipeline.from_run`; shared by the pipelines whose runs hold a
    diffusion model (``diffusion``, ``unclip``)."""
    from gaf.components import create_or_load, load_from
    from gaf.registry import REGISTRY

    from .run_meta import component_ref, field, module_dirs

    registry = registry or REGISTRY
    root = meta.root
    dirs = module_dirs(meta, ema, required=("noise_model",))
    sample_shape = field(meta, "sample_shape", list)
    if not sample_shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                   for n in sample_shape):
        raise meta.fail("sample_shape", f"expected positive integers, got {sample_shape!r}")
    scheduler_record(meta, "scheduler")  # checked before any module is loaded
    first = component_ref(meta, "autoencoder")
    if first is None:
        raise meta.fail("autoencoder", "missing")
    fixed = component_ref(meta, "conditioner")

    def load(kind: str, key: str) -> Any:
        path = dirs.get(key)
        return None if path is None else load_from(registry, kind, path).to(device).eval()

    noise_model = load("noise-model", "noise_model")
    conditioner = load("conditioner", "conditioner")
    if conditioner is None and fixed:  # not trained with the model (a frozen encoder)
        conditioner = create_or_load(registry, "conditioner", fixed["name"],
                                     **fixed.get("options", {}))
        conditioner = conditioner.to(device).eval()
    if first.get("path"):
        ae_path = Path(first["path"])
        ae_path = ae_path if ae_path.is_absolute() else root / ae_path
        autoencoder = load_from(registry, "autoencoder", ae_path)
    else:
        autoencoder = registry.create("autoencoder", first["name"],
                                      **first.get("options", {}))
    autoencoder = autoencoder.to(device).eval()
    sched = scheduler_from_meta(meta, "scheduler", noise_model.prediction_type,
                                name=scheduler, overrides=scheduler_options, registry=registry)
    return {"noise_model": noise_model, "scheduler": sched, "autoencoder": autoencoder,
            "conditioner": conditioner, "sample_shape": sample_shape}


def scheduler_record(meta: Any, key: str) -> dict[str, Any]:
    """The scheduler recorded as ``{name, config}`` under ``key`` of a ``pipeline.json``
    (:class:`~.run_meta.RunMeta`), checked: a damaged one is a :class:`BadData` naming
    the file and field."""
    from .run_meta import field

    record = field(meta, key, dict)
    if not isinstance(record.get("name"), str):
        raise meta.fail(f"{key}.name", f"expected a registered scheduler, got "
                                       f"{record.get('name')!r}")
    if not isinstance(record.get("config", {}), dict):
        raise meta.fail(f"{key}.config", "expected a table of options")
    return record


def scheduler_from_meta(meta: Any, key: str, prediction_type: str, *, name: str | None = None,
                        overrides: dict[str, Any] | None = None, registry: Any) -> Any:
    """The scheduler of :func:`scheduler_record` ``(meta, key)``, built ``from_config`` of
    its config with ``overrides`` and ``prediction_type`` (what its model predicts);
    ``name`` samples with another registered scheduler instead. A config that does not
    build is a :class:`BadData` naming the file and field; an override the scheduler
    does not have, or one it refuses, a :class:`BadConfig`."""
    record = scheduler_record(meta, key)
    name = name or record["name"]
    cls = registry.get("scheduler", name)
    _check_options(name, cls, overrides or {})
    options = {**record.get("config", {}), **(overrides or {}),
               "prediction_type": prediction_type}
    try:
        return cls.from_config(options)
    except (GafError, TypeError, ValueError) as exc:
        if overrides:  # the user's --set, most likely
            raise BadConfig(f"scheduler {name} with {overrides}: {exc}") from None
        raise BadData(f"the scheduler config does not build {name!r}: {exc}",
                      path=str(meta.path), field=f"{key}.config") from None


def _has_parameters(module: Any) -> bool:
    params = getattr(module, "parameters", None)
    return params is not None and next(iter(params()), None) is not None


def _check_options(name: str, cls: Any, options: dict[str, Any]) -> None:
    """Refuse options the scheduler's config does not have (``from_config`` would drop
    them silently)."""
    import attrs

    from gaf.config import field_names
    from gaf.errors import did_you_mean

    config = getattr(cls, "Config", None)
    if config is None or not attrs.has(config):
        return
    known = field_names(config)
    for key in options:
        if key not in known:
            raise BadConfig(f"scheduler {name}: unknown option {key!r}"
                            f"{did_you_mean(key, known)} (options: {', '.join(known)})")


def _sample_hook() -> Callable[..., Any] | None:
    """The ``gaf_sample_step`` hook caller, or ``None`` when no plugin implements it."""
    from gaf.hooks import plugin_manager

    caller = plugin_manager().hook.gaf_sample_step
    return caller if caller.get_hookimpls() else None


class _progress_bar:  # noqa: N801 - a small context-free wrapper
    """A rich progress bar on stderr over the denoising steps."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("sampling"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total} steps"),
                                  TimeRemainingColumn(), console=Console(stderr=True),
                                  transient=True)
        self._task = self._progress.add_task("sampling", total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
