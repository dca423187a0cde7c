"""DDPM and DDIM schedulers (:class:`gaf.interfaces.Scheduler`) with diffusers' field names.

Registered as ``scheduler`` ``ddpm`` (:class:`DDPMScheduler`) and ``ddim``
(:class:`DDIMScheduler`). Both take one shared :class:`SchedulerConfig` (defined in
:mod:`.scheduler_config`, closed forms in :mod:`.schedule_math`) and derive from the
public bases of :mod:`.scheduler_base`: :class:`NoiseSchedule` (the forward process,
``add_noise`` / ``velocity`` / ``training_target``, ``from_config``) and
:class:`SchedulerBase` (plus ``set_timesteps``, ``step``, ``new_state``), so a config
saved by one loads into the other, like diffusers' ``DDIMScheduler.from_config(
ddpm.config)``::

    ddpm = gaf.create("scheduler", "ddpm")
    ddim = gaf.create("scheduler", "ddim", **gaf.config.to_dict(ddpm.config))
    ddim = DDIMScheduler.from_config(ddpm.config)            # or a (diffusers) dict

Forward process
---------------
β_0 … β_{T−1} (``T`` = ``num_train_timesteps``) are per-step noise variances,
α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s (``alphas_cumprod``). Noising jumps straight to
any t: ``add_noise(x0, ε, t)`` = x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε with ε ~ N(0, I).
``beta_schedule``: ``linear`` (β linear from ``beta_start`` to ``beta_end``; DDPM's
1e-4 → 0.02), ``scaled_linear`` (√β linear, squared; LDM / Stable Diffusion use
0.00085 → 0.012), ``squaredcos_cap_v2`` (cosine ᾱ of Nichol & Dhariwal, β capped at
0.999; ignores beta_start/end). ``trained_betas`` overrides all three with explicit
values (one per training step). ``rescale_betas_zero_snr`` (Lin et al. 2023) rescales
√ᾱ so that ᾱ_{T−1} = 0 exactly: the last training step is pure noise. Then ε-prediction
cannot recover x0 at t = T−1 (x̂0 = (x_t − ε̂)/0), so :meth:`step` refuses that case;
use ``v_prediction`` and ``trailing`` spacing, which starts at T−1.

What the model predicts (``prediction_type``)
---------------------------------------------
``epsilon`` (ε), ``sample`` (x0) or ``v_prediction``: v = √ᾱ_t·ε − √(1−ᾱ_t)·x0
(Salimans & Ho 2022; :meth:`velocity` gives this training target). Since (√ᾱ, √(1−ᾱ))
is a unit vector, (x_t, v) is a rotation of (x0, ε) and inverts exactly:
x̂0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂ and ε̂ = √ᾱ_t·v̂ + √(1−ᾱ_t)·x_t. For ε:
x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t. :meth:`pred_original_sample` and :meth:`pred_epsilon`
are these conversions; :meth:`training_target` is the matching regression target.

x̂0 post-processing (every step)
-------------------------------
``thresholding`` (Imagen's dynamic thresholding, pixel-space models only): per sample
take s = the ``dynamic_thresholding_ratio`` quantile of |x̂0|, clamp s to
[1, ``sample_max_value``], then x̂0 ← clamp(x̂0, −s, s)/s. Otherwise, ``clip_sample``
clamps x̂0 to ±``clip_sample_range``. Clipping is meaningless for scaled latents: latent
models set ``clip_sample=False`` (diffusers' default is True, kept here).

Sampling timesteps (``set_timesteps(N)``, ``timestep_spacing``)
--------------------------------------------------------------
``timesteps`` is a LongTensor of N strictly decreasing ints in [0, T):

* ``leading``: k·(T//N) + ``steps_offset``, k = N−1 … 0 (T=1000, N=10: 900, 800 … 0;
  ``steps_offset=1`` gives 901 … 1, as Stable Diffusion's configs ask);
* ``trailing``: round(T − k·T/N) − 1, k = 0 … N−1 (999, 899, … 99);
* ``linspace``: round(linspace(0, T−1, N)) reversed (999, 888, … 0).

``steps_offset`` only shifts ``leading`` (as in diffusers). ``set_timesteps(timesteps=
[...])`` takes any strictly decreasing list instead. A step from ``t`` goes to the
*next entry of that list* ("prev"), or past the end (prev = −1) after the last one;
nothing else is remembered between steps, so once ``set_timesteps`` has been called a
scheduler can be shared by several threads (set_timesteps swaps the whole plan at once).

DDPM step (:class:`DDPMScheduler`, Ho et al. 2020)
--------------------------------------------------
For a jump t → prev, with the effective step α'_t = ᾱ_t/ᾱ_prev and β'_t = 1 − α'_t
(α_t and β_t when prev = t−1, DDPM eq. 6–7), q(x_prev | x_t, x0) is Gaussian with

    mean = √ᾱ_prev·β'_t/(1−ᾱ_t)·x0 + √α'_t·(1−ᾱ_prev)/(1−ᾱ_t)·x_t
    var  = β̃_t = (1−ᾱ_prev)/(1−ᾱ_t)·β'_t.

The step plugs in (clipped) x̂0 and adds √var·z, where ``variance_type`` picks var:
``fixed_small`` = β̃_t (default) or ``fixed_large`` = β'_t. ᾱ_prev = 1 past the end,
where no noise is added (the mean is then exactly x̂0).

DDIM step (:class:`DDIMScheduler`, Song et al. 2021)
----------------------------------------------------
With ε̂ (from the model output, before clipping) and the clipped x̂0,

    σ_t(η) = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)
    x_prev = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ_t²)·ε̂ + σ_t·z.

``eta`` = 0 is deterministic (the x̂0/ε̂ pair is re-noised onto the marginal at prev
with the same ε̂, so the true ε maps x_t exactly onto add_noise(x0, ε, prev)); η = 1 has
DDPM's posterior variance. Past the end ᾱ_prev is 1 when ``set_alpha_to_one`` (the
last step returns x̂0) or ᾱ_0 otherwise. For η > 1 the direction coefficient is
clamped at 0 (diffusers returns NaN).

Randomness: ``step(..., generator=g)`` draws z with ``torch.randn(generator=g)`` (one
generator, or a list with one generator per batch row so that a row's draws do not
depend on the rest of the batch); ``variance_noise=z`` passes z explicitly.

Deliberate differences from diffusers
-------------------------------------
* ``step`` returns the previous sample (a Tensor), not a dataclass; x̂0 for previews is
  :meth:`pred_original_sample` (+ :meth:`clip_x0`).
* DDIM looks the previous timestep up in ``timesteps`` (diffusers uses t − T//N, wrong
  for ``linspace`` and for ``trailing`` when N does not divide T; diffusers#12633).
* ``trailing`` always returns exactly N timesteps (diffusers sometimes appends −1).
* ``eta`` is a config field of DDIM (``step`` still takes an ``eta=`` override).
* DDPM adds no noise on the last step; diffusers adds it whenever t > 0, which matters
  for ``fixed_large`` with ``trailing`` spacing or ``steps_offset`` (noise of scale
  √(1−ᾱ_t) on the returned sample).
* ``step`` before ``set_timesteps`` is an error (diffusers' DDPM silently steps the
  full T-step chain); a timestep not in ``timesteps`` is a ValueError.
* Schedules are float64; ``variance_type`` supports only fixed_small / fixed_large.
* Config checks diffusers does not make: β in (0, 1) (the last may be 1), a
  ``trained_betas`` of length T, leading timesteps + offset within [0, T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import schedule_math as sm
from .scheduler_base import NoiseSchedule, SchedulerBase
from .scheduler_config import SchedulerConfig

__all__ = ["SchedulerConfig", "NoiseSchedule", "SchedulerBase", "DDPMScheduler", "DDIMScheduler"]


class DDPMScheduler(SchedulerBase):
    """Ancestral DDPM sampling (diffusers' ``DDPMScheduler`` fields and semantics)."""

    def step(self, model_output: Tensor, t: int | Tensor, sample: Tensor, *,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             variance_noise: Tensor | None = None) -> Tensor:
        """x_prev = posterior mean(x̂0, x_t) + √var·z (no noise on the last step)."""
        t, prev, ab_t, x0, _ = self._prepare(model_output, t, sample)
        x0 = self.clip_x0(x0)
        c0, ct, var, beta_t = sm.posterior(ab_t, self.alpha_bar(prev))
        mean = c0 * x0 + ct * sample
        if prev < 0:
            return mean
        std = math.sqrt(var if self.config.variance_type == "fixed_small" else beta_t)
        return mean + std * sm.draw_noise(sample, generator, variance_noise)


class DDIMScheduler(SchedulerBase):
    """DDIM sampling with η (diffusers' ``DDIMScheduler`` fields and semantics)."""

    @property
    def final_alpha_cumprod(self) -> float:
        return 1.0 if self.config.set_alpha_to_one else self._ab[0]

    def step(self, model_output: Tensor, t: int | Tensor, sample: Tensor, *,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             variance_noise: Tensor | None = None, eta: float | None = None) -> Tensor:
        """x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z, σ = σ_t(η); ``eta`` overrides
        the config's."""
        eta = self.config.eta if eta is None else eta
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        t, prev, ab_t, x0, eps = self._prepare(model_output, t, sample)
        x0 = self.clip_x0(x0)
        ab_prev = self.alpha_bar(prev)
        sigma = sm.ddim_sigma(ab_t, ab_prev, eta)
        direction = math.sqrt(max(1.0 - ab_prev - sigma ** 2, 0.0))
        out = math.sqrt(ab_prev) * x0 + direction * eps
        if sigma > 0:
            out = out + sigma * sm.draw_noise(sample, generator, variance_noise)
        return out
