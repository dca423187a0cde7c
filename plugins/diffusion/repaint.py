"""RePaint: inpainting with any trained diffusion model, no retraining (Lugmayr et al. 2022).

RePaint (arXiv:2201.09865, Algorithm 1) fills the hole of an image with an
unconditionally (or text-) trained denoiser. At every reverse step the *known* region
is not sampled but drawn from the forward process of the original image, and pasted
over the model's sample; the model only fills the hole and, step by step, harmonises
it with the pasted context. To let the hole and the context agree, the sampler
*resamples*: it regularly jumps back to a noisier level and denoises again.
:meth:`gaf.plugins.t2i.diffusion_pipeline.DiffusionPipeline.inpaint` runs it with any
trained ``ldm`` run (latent or pixel space)::

    pipe = DiffusionPipeline.from_run(run_dir, scheduler="ddpm")
    out = pipe.inpaint(captions, images, masks, steps=50, guidance=3, seed=0)

Masks
-----
The project-wide convention: ``m`` is ``(B, 1, H, W)`` of exact 0s and 1s, **1 where the
image is generated** (the hole), 0 where it is known (the CLI's mask files are white
where they are generated). A mask that is not binary (a JPEG's or a resized mask's
greys), empty (nothing to generate) or full (nothing known) is refused, not
thresholded.

The sampling grid and its positions
-----------------------------------
The scheduler's ``set_timesteps(N)`` fixes N timesteps τ_{N−1} > … > τ_1 > τ_0. A
*position* p ∈ {−1, 0, …, N−1} names the level τ_p of the grid (p = N−1 the noisiest,
where sampling starts from noise); p = −1 is the clean end ("past the last
timestep", where ᾱ is the scheduler's ``final_alpha_cumprod``, 1 for ``ddpm``). A
denoising step goes from p to p − 1 (``scheduler.step`` at τ_p); an *undo* goes from
p to p + 1.

The jump schedule (:func:`jump_schedule`)
------------------------------------------
RePaint's ``get_schedule_jump(t_T=N, jump_length=j, jump_n_sample=r)``, as positions::

    jumps = {k: r − 1 for k in range(0, N − j, j)}     # the jump points 0, j, 2j, … < N − j
    t = N; ts = []
    while t >= 1:
        t -= 1; ts.append(t)                            # one level down
        if jumps.get(t, 0) > 0:                         # a jump point with jumps left:
            jumps[t] -= 1
            for _ in range(j): t += 1; ts.append(t)     #   j levels back up, one at a time
    ts.append(−1)                                       # the last step, to the clean level

So the schedule starts at N − 1 (the top), moves by ±1, ends at −1, and at every jump
point k it climbs ``j`` levels back up ``r − 1`` times (the r-th arrival goes on
down). With J = |range(0, N − j, j)| = max(0, ⌈(N − j)/j⌉) jump points it has
N + 2·J·(r − 1)·j moves, of which :func:`denoising_steps` = N + J·(r − 1)·j are
denoising steps (network calls) and J·(r − 1)·j undos. ``r = 1`` (or ``j ≥ N``) is
plain sampling with the paste, the "replacement" method RePaint improves on.
diffusers' ``RePaintScheduler.set_timesteps`` is the same schedule without the final
−1, multiplied by T // N.

The undo (:func:`renoise`)
--------------------------
The forward process is Markov with q(x_a | x_b) = N(√(ᾱ_a/ᾱ_b)·x_b, (1 − ᾱ_a/ᾱ_b)·I)
for any two levels ᾱ_a < ᾱ_b (the product of the per-step transitions in between), so
one exact draw moves a sample from level b up to level a::

    x_a = √(ᾱ_a/ᾱ_b)·x_b + √(1 − ᾱ_a/ᾱ_b)·ε,    ε ~ N(0, I).

This holds between any two levels of the sampling grid, not just adjacent training
steps. It keeps the marginal: if x_b = √ᾱ_b·x0 + √(1 − ᾱ_b)·ε′, then x_a has mean
√ᾱ_a·x0 and variance (ᾱ_a/ᾱ_b)(1 − ᾱ_b) + 1 − ᾱ_a/ᾱ_b = 1 − ᾱ_a.

The paste (:class:`KnownRegion`)
--------------------------------
After every denoising step to the level ℓ (ᾱ_ℓ; ℓ = −1 at the clean end) the known
region is replaced by a fresh draw of the forward process of the original x0::

    x ← (1 − m)·(√ᾱ_ℓ·x0 + √(1 − ᾱ_ℓ)·ε) + m·x,    ε ~ N(0, I)  (= add_noise(x0, ε, ℓ))

An undo needs no paste: the known part it moves up is already a forward draw of x0,
and the undo keeps that marginal. At the clean end (ᾱ = 1) the paste is x0 itself.
:class:`KnownRegion` is this paste as a step callback ``(step, timestep, latents) ->
latents`` (the level is ``scheduler.previous_timestep(timestep)``): the RePaint loop
(:func:`repaint`) calls it after each denoising step, and the same object handed to
a plain ``DiffusionPipeline.__call__(…, callback=paste)`` is RePaint without
resampling. Its :meth:`~KnownRegion.finish` pastes the ground truth into the *decoded*
image in pixel space, ``out = (1 − m)·image + m·decoded``, so the known pixels of the
result equal the input exactly whatever the first stage does (ports that skip this
last paste return the autoencoder's reconstruction of the known region).

Latent pipelines
----------------
With an autoencoder the loop runs on latents: x0 is ``scale_factor · encode(image)``
(what ``ldm`` trains on), with the hole blanked to 0 before encoding so that nothing
of what the input holds there leaks into the known latents through the encoder's
receptive field. The mask goes to the latent grid by max-pooling
(:func:`latent_mask`): a latent cell is regenerated when *any* pixel it covers is in
the hole, so no pixel of the hole is decoded from a known latent; the pixel-space
paste at the end then restores the known pixels of the cells the hole touches.
Seams at the mask's edge are what resampling is there to reduce.

The loop (:func:`repaint`)
--------------------------
From noise at position N − 1, follow the schedule: a move down is a denoising step
(the caller's prediction, classifier-free guidance included, then
``scheduler.step``, then the ``gaf_sample_step`` hook, the paste and the
``callback``, in that order); a move up is an undo, with noise drawn from image i's
own generator for row i (as every other draw). The hook and the callback see
``step`` = the index of the denoising step (0 … :func:`denoising_steps` − 1, counting
repeated ones) and ``timestep`` = τ_p, the level the model was evaluated at, like
:func:`~gaf.plugins.t2i.diffusion_pipeline.denoise`. The paper samples with DDPM's
ancestral step: use ``ddpm`` (or ``ddim`` with ``eta = 1``); a deterministic DDIM step
runs but resamples less well. A multistep sampler keeps a history of the steps it
took and cannot follow a jump back: it is refused when the schedule jumps (it runs
with ``jump_n_sample = 1``).

Defaults (:data:`STEPS`, :data:`JUMP_LENGTH`, :data:`JUMP_N_SAMPLE`)
----------------------------------------------------------------------
The paper's are 250 steps, jump length 10 and 10 resamplings: 24 jump points,
2,410 denoising steps and 2,160 undos per image. The defaults here keep that
shape at a fifth of the cost: 50 steps, jump length 2, 10 resamplings. A jump still
spans 1/25 of the trajectory (2 of 50 grid levels: 40 training timesteps of a
1000-step model, as 10 of 250 are), every jump point is still visited 10 times, and
there are again 24 jump points, so one image costs 482 denoising steps (about ten
times a plain 50-step sample, not fifty times), which a small CPU can afford.

Deliberate differences from diffusers' ``RePaintScheduler`` / ``RePaintPipeline``
---------------------------------------------------------------------------------
* The mask is 1 where the image is generated (diffusers: 1 where it is kept).
* Any stateless gaf scheduler steps (diffusers' RePaint has its own DDIM-form step).
* An undo is one exact draw per grid move; diffusers draws one per training step,
  with β_t … β_{t+n−1} for the move from t to t + n (one training step early).
* The known region's noise is a fresh draw; diffusers reuses the step's noise for it.
* Latent-space models work (encode, max-pooled mask, pixel-space paste at the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gaf.errors import BadConfig, BadData

from .step_callback import replacement

__all__ = ["JUMP_LENGTH", "JUMP_N_SAMPLE", "STEPS", "KnownRegion", "check_images",
           "denoising_steps", "jump_schedule", "latent_mask", "renoise", "repaint"]

#: default denoising steps of the grid (the paper: 250)
STEPS = 50
#: default jump length j in grid levels (the paper: 10 of 250; here 2 of 50)
JUMP_LENGTH = 2
#: default number of times r each jump point is passed (the paper: 10)
JUMP_N_SAMPLE = 10

Predict = Callable[[Tensor, int], Tensor]
StepCallback = Callable[[int, int, Tensor], Any]


def _check_counts(steps: int, jump_length: int, jump_n_sample: int) -> None:
    for name, value in (("steps", steps), ("jump_length", jump_length),
                        ("jump_n_sample", jump_n_sample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadConfig(f"{name} must be an integer >= 1, got {value!r}")


def jump_schedule(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's time schedule (the paper's ``get_schedule_jump``) as grid positions.

    Starts at ``steps − 1`` (the noisiest level), moves by ±1, ends at −1 (the clean
    level); at each jump point k ∈ range(0, steps − jump_length, jump_length) it
    climbs ``jump_length`` levels back up ``jump_n_sample − 1`` times (module doc).
    """
    _check_counts(steps, jump_length, jump_n_sample)
    jumps = {k: jump_n_sample - 1 for k in range(0, steps - jump_length, jump_length)}
    t = steps
    positions: list[int] = []
    while t >= 1:
        t -= 1
        positions.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                positions.append(t)
    positions.append(-1)
    return positions


def denoising_steps(steps: int, jump_length: int, jump_n_sample: int) -> int:
    """The denoising steps (network calls) of :func:`jump_schedule`, in closed form:
    ``steps + J·(jump_n_sample − 1)·jump_length`` with J = max(0, ⌈(steps −
    jump_length)/jump_length⌉) jump points."""
    _check_counts(steps, jump_length, jump_n_sample)
    points = max(0, -(-(steps - jump_length) // jump_length))
    return steps + points * (jump_n_sample - 1) * jump_length


def renoise(sample: Tensor, alpha_bar_from: float, alpha_bar_to: float,
            noise: Tensor) -> Tensor:
    """The undo from a less noisy level (ᾱ_b = ``alpha_bar_from``) to a noisier one
    (ᾱ_a = ``alpha_bar_to`` ≤ ᾱ_b): √(ᾱ_a/ᾱ_b)·x_b + √(1 − ᾱ_a/ᾱ_b)·ε, an exact draw
    of the forward process q(x_a | x_b) (module doc)."""
    if not (0.0 <= alpha_bar_to <= alpha_bar_from <= 1.0 and alpha_bar_from > 0.0):
        raise ValueError(f"an undo goes to a noisier level: need 0 <= ᾱ_to <= ᾱ_from <= 1 "
                         f"and ᾱ_from > 0, "
                         f"got ᾱ_from={alpha_bar_from}, ᾱ_to={alpha_bar_to}")
    ratio = alpha_bar_to / alpha_bar_from
    return math.sqrt(ratio) * sample + math.sqrt(1.0 - ratio) * noise


def latent_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, 1, H, W)`` mask → ``(B, 1, h, w)`` on a latent grid of ``size = (h, w)`` by
    max-pooling: a cell is 1 (regenerated) when any pixel it covers is. ``H`` and ``W``
    must be multiples of ``h`` and ``w``."""
    h, w = int(size[0]), int(size[1])
    H, W = mask.shape[-2:]
    if H % h or W % w:
        raise BadConfig(f"a {H}×{W} mask does not tile the {h}×{w} latent grid")
    if (H, W) == (h, w):
        return mask
    return F.max_pool2d(mask, kernel_size=(H // h, W // w))


def check_images(images: Any, n: int | None, image_shape: Sequence[int] | None) -> Tensor:
    """``images`` as given, checked: a float tensor ``(n, *image_shape)`` (any batch when
    ``n`` is None, any size when ``image_shape`` is None), finite, within [-1, 1]; a
    :class:`~gaf.errors.BadData` saying what was expected otherwise."""
    want = tuple(image_shape) if image_shape is not None else None
    batch = "B" if n is None else str(n)
    shown = f"({batch}, {', '.join(map(str, want))})" if want else f"({batch}, C, H, W)"
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise BadData(f"images: expected a tensor {shown}, got {got}")
    wrong_size = want is not None and tuple(images.shape[1:]) != want
    if (n is not None and images.shape[0] != n) or wrong_size:
        raise BadData(f"images: expected {shown} (one per condition, the pipeline's size), "
                      f"got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise BadData(f"images: expected floats in [-1, 1] (x / 127.5 − 1 for 8-bit "
                      f"pixels), got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise BadData("images: some values are NaN or infinite")
    low, high = float(images.min()), float(images.max())
    if low < -1 or high > 1:
        raise BadData(f"images: values must lie in [-1, 1], got [{low:.4g}, {high:.4g}] "
                      f"(x / 127.5 − 1 for 8-bit pixels)")
    return images


def _noise(like: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like ``like``, row ``i`` from generator ``i``."""
    rows = [torch.randn(tuple(like.shape[1:]), generator=g, device=g.device, dtype=like.dtype)
            for g in generators]
    return torch.stack(rows).to(like.device)


def _scheduler_levels(scheduler: Any) -> None:
    for name in ("previous_timestep", "alpha_bar"):
        if not callable(getattr(scheduler, name, None)):
            raise BadConfig(f"RePaint needs a scheduler with {name}() (a gaf SchedulerBase "
                            f"such as ddpm or ddim); {type(scheduler).__name__} has none")


class KnownRegion:
    """The known-region paste of RePaint, usable as a step callback (module doc).

    ``known`` ``(B, C, h, w)`` is x0 in the sampler's space (scaled latents or pixels),
    ``mask`` ``(B, 1, h, w)`` is 1 where the sample is generated; ``generators`` (one per
    row) draw the paste's noise. ``images`` and ``pixel_mask`` (pixel space, ``(B, C,
    H, W)`` and ``(B, 1, H, W)``) are what :meth:`finish` pastes into the decoded
    image; they default to ``known`` and ``mask`` (a pixel-space sampler). Build it
    from images with :meth:`from_images` or ``DiffusionPipeline.known_region``.

    ``paste(step, timestep, latents)`` returns the latents with the known region
    replaced by its forward draw at ``scheduler.previous_timestep(timestep)``: hand it
    to ``DiffusionPipeline.__call__(…, generators=paste.generators, callback=paste)``
    for RePaint without resampling.
    """

    def __init__(self, scheduler: Any, known: Tensor, mask: Tensor,
                 generators: Sequence[torch.Generator], *, images: Tensor | None = None,
                 pixel_mask: Tensor | None = None):
        _scheduler_levels(scheduler)
        self.scheduler = scheduler
        self.known = known
        #: ``(B, 1, h, w)`` bool: True where the sample is generated
        self.hole = mask.bool()
        self.generators = list(generators)
        if len(self.generators) != known.shape[0]:
            raise BadConfig(f"{len(self.generators)} generators for {known.shape[0]} images")
        self.images = known if images is None else images
        self.pixel_hole = self.hole if pixel_mask is None else pixel_mask.bool()

    @classmethod
    def from_images(cls, scheduler: Any, images: Tensor, masks: Tensor,
                    generators: Sequence[torch.Generator], *, autoencoder: Any = None,
                    device: Any = None) -> KnownRegion:
        """The paste for ``images`` ``(B, C, H, W)`` in [-1, 1] and binary ``masks``
        ``(B, 1, H, W)`` (1 = generate; both checked by the caller). With an
        ``autoencoder``, x0 = ``scale_factor · encode(images with the hole set to 0)``
        and the mask is max-pooled to the latent grid (:func:`latent_mask`)."""
        device = images.device if device is None else torch.device(device)
        pixels = images.to(device)
        pixel_mask = masks.to(device=device, dtype=torch.float32)
        blanked = torch.where(pixel_mask.bool(), torch.zeros((), device=device),
                              pixels.float())
        if autoencoder is None:
            return cls(scheduler, blanked, pixel_mask, generators, images=pixels,
                       pixel_mask=pixel_mask)
        scale = float(getattr(autoencoder, "scale_factor", 1.0))
        known = autoencoder.encode(blanked).float() * scale
        mask = latent_mask(pixel_mask, known.shape[-2:])
        return cls(scheduler, known, mask, generators, images=pixels, pixel_mask=pixel_mask)

    def __len__(self) -> int:
        return self.known.shape[0]

    def level_after(self, timestep: int) -> int:
        """The level a denoising step from ``timestep`` lands on (−1: the clean end)."""
        return int(self.scheduler.previous_timestep(int(timestep)))

    def noised(self, level: int, noise: Tensor | None = None) -> Tensor:
        """x0 drawn from the forward process at ``level``: √ᾱ·x0 + √(1 − ᾱ)·ε (ε from
        the generators unless ``noise`` is given; none is drawn where ᾱ = 1)."""
        ab = float(self.scheduler.alpha_bar(int(level)))
        a, b = math.sqrt(ab), math.sqrt(1.0 - ab)
        if b == 0.0:
            return a * self.known
        if noise is None:
            noise = _noise(self.known, self.generators)
        return a * self.known + b * noise

    def paste(self, sample: Tensor, level: int, noise: Tensor | None = None) -> Tensor:
        """(1 − m)·:meth:`noised` (level) + m·sample."""
        return torch.where(self.hole, sample, self.noised(level, noise).to(sample.dtype))

    def __call__(self, step: int, timestep: int, latents: Tensor) -> Tensor:
        if latents.shape != self.known.shape:
            raise BadConfig(f"the paste holds {tuple(self.known.shape)} known latents; the "
                            f"sampler's are {tuple(latents.shape)} (one image per condition, "
                            f"of the pipeline's size)")
        return self.paste(latents, self.level_after(timestep))

    def finish(self, decoded: Tensor) -> Tensor:
        """The ground truth pasted into the decoded images: (1 − m)·image + m·decoded, in
        the images' dtype (their known pixels come back exactly)."""
        return torch.where(self.pixel_hole, decoded.to(self.images.dtype), self.images)


def repaint(predict: Predict, scheduler: Any, x: Tensor, paste: StepCallback, *,
            jump_length: int, jump_n_sample: int, generators: Sequence[torch.Generator],
            hook: Callable[..., Any] | None = None, callback: StepCallback | None = None,
            bar: Any = None) -> Tensor:
    """RePaint's loop (module doc) from ``x`` at the top of the grid that
    ``scheduler.set_timesteps`` fixed, to the clean end.

    ``predict(x_in, t)`` is the model's (guided) output at ``t``; after each
    ``scheduler.step`` come ``hook(step=, timestep=, latents=)``, ``paste(step, t,
    latents)`` (a :class:`KnownRegion`) and ``callback(step, t, latents)``, each of
    which may return replacement latents. Undos draw row ``i``'s noise from
    ``generators[i]``; ``bar.advance()`` runs after each denoising step.
    """
    _scheduler_levels(scheduler)
    grid = [int(t) for t in scheduler.timesteps][::-1]  # ascending: position p -> τ_p
    schedule = jump_schedule(len(grid), jump_length, jump_n_sample)
    moves = list(zip(schedule, schedule[1:]))
    state = scheduler.new_state() if hasattr(scheduler, "new_state") else None
    if state is not None and any(b > a for a, b in moves):
        raise BadConfig(f"RePaint jumps back to noisier levels, which the multistep sampler "
                        f"{type(scheduler).__name__} cannot follow (it keeps the history of "
                        f"its steps); sample with a stateless scheduler (ddpm, ddim) or set "
                        f"jump_n_sample=1")
    step_kwargs: dict[str, Any] = {"generator": list(generators)}
    if state is not None:
        step_kwargs["state"] = state
    scale_input = getattr(scheduler, "scale_model_input", None)

    def level(p: int) -> int:
        return grid[p] if p >= 0 else -1

    i = 0
    for here, there in moves:
        if there > here:  # an undo, one level up
            x = renoise(x, scheduler.alpha_bar(level(here)), scheduler.alpha_bar(level(there)),
                        _noise(x, generators))
            continue
        t = level(here)
        x_in = scale_input(x, t) if scale_input is not None else x
        x = scheduler.step(predict(x_in, t), t, x, **step_kwargs)
        if hook is not None:
            x = replacement(hook(step=i, timestep=t, latents=x), x, "the gaf_sample_step hook")
        x = replacement(paste(i, t, x), x, "the paste")
        if callback is not None:
            x = replacement(callback(i, t, x), x, "the step callback")
        if bar is not None:
            bar.advance()
        i += 1
    return x
