"""DDPM and DDIM schedulers (:class:`gaf.interfaces.Scheduler`) with diffusers' field names.

Registered as ``scheduler`` ``ddpm`` (:class:`DDPMScheduler`) and ``ddim``
(:class:`DDIMScheduler`). Both take one shared :class:`SchedulerConfig` (defined in
:mod:`.scheduler_config`, closed forms in :mod:`.schedule_math`), so a config
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
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import field_names, from_dict, to_dict
from gaf.errors import BadConfig

from . import schedule_math as sm
from .scheduler_config import SchedulerConfig

__all__ = ["SchedulerConfig", "DDPMScheduler", "DDIMScheduler"]

@attrs.frozen
class _Plan:
    """What set_timesteps fixes: swapped in one assignment, never mutated."""

    timesteps: Tensor
    order: tuple[int, ...]
    prev: Mapping[int, int]


class _Scheduler:
    """The parts DDPM and DDIM share: schedule, timesteps, conversions, noise."""

    Config = SchedulerConfig
    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    def __init__(self, config: SchedulerConfig | None = None):
        if config is None:
            config = SchedulerConfig()
        elif not isinstance(config, SchedulerConfig):
            raise BadConfig(f"{type(self).__name__} takes a SchedulerConfig, got "
                            f"{type(config).__name__} (use {type(self).__name__}.from_config)")
        self.config = attrs.evolve(config)  # a private copy: the schedule depends on it
        cfg = self.config
        if cfg.trained_betas is not None:
            betas = torch.tensor(cfg.trained_betas, dtype=torch.float64)
        else:
            betas = sm.make_betas(cfg.beta_schedule, cfg.num_train_timesteps,
                                  cfg.beta_start, cfg.beta_end)
        if cfg.rescale_betas_zero_snr:
            betas = sm.rescale_zero_terminal_snr(betas)
        #: β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s, float64, shape (T,); read-only
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self._ab = self.alphas_cumprod.tolist()  # python floats for the step closed forms
        self._on_device: dict[Any, Tensor] = {}
        self._plan: _Plan | None = None

    # ------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, config: Any, **overrides: Any):
        """Build from a :class:`SchedulerConfig`, another attrs config or a mapping (a
        gaf.json ``config`` or a diffusers ``scheduler_config.json``): keys this config
        does not know (``_class_name``, ``skip_prk_steps``, …) are dropped."""
        if isinstance(config, SchedulerConfig) and not overrides:
            return cls(config)
        data = to_dict(config) if attrs.has(type(config)) else dict(config)
        data.update(overrides)
        known = set(field_names(SchedulerConfig))
        kept = {k: v for k, v in data.items() if k in known}
        return cls(from_dict(SchedulerConfig, kept, where=cls.__name__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @property
    def final_alpha_cumprod(self) -> float:
        """ᾱ used past the last timestep (prev = −1)."""
        return 1.0

    # ---------------------------------------------------------------- timesteps

    def set_timesteps(self, num_inference_steps: int | None = None,
                      device: str | torch.device | None = None, *,
                      timesteps: Sequence[int] | None = None) -> None:
        """Fix the ``num_inference_steps`` sampling timesteps (by ``timestep_spacing``),
        or an explicit strictly decreasing list ``timesteps``; ``device`` places the
        ``timesteps`` LongTensor."""
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("set_timesteps takes num_inference_steps or timesteps=, not both"
                             if timesteps is not None else
                             "set_timesteps needs num_inference_steps (or timesteps=)")
        if timesteps is not None:
            order = [int(t) for t in (timesteps.tolist() if isinstance(timesteps, Tensor)
                                      else timesteps)]
        else:
            n = num_inference_steps
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
                raise ValueError(f"num_inference_steps must be an int in [1, {T}] "
                                 f"(num_train_timesteps), got {n!r}")
            order = sm.make_timesteps(self.config.timestep_spacing, n, T,
                                      self.config.steps_offset)
            if order[0] >= T:
                raise ValueError(f"leading timesteps with steps_offset={self.config.steps_offset}"
                                 f" reach {order[0]} >= num_train_timesteps={T}; lower "
                                 f"steps_offset or num_inference_steps ({n})")
        sm.check_descending(order, T)
        prev = dict(zip(order, order[1:] + [-1]))
        self._plan = _Plan(torch.tensor(order, dtype=torch.long, device=device),
                           tuple(order), prev)

    @property
    def timesteps(self) -> Tensor | None:
        """The sampling timesteps (LongTensor, descending), or None before set_timesteps."""
        plan = self._plan
        return None if plan is None else plan.timesteps

    @property
    def num_inference_steps(self) -> int | None:
        plan = self._plan
        return None if plan is None else len(plan.order)

    def previous_timestep(self, t: int | Tensor) -> int:
        """The timestep a step from ``t`` goes to: the next entry of ``timesteps``, or −1
        after the last one."""
        return self._lookup(t)[1]

    def _lookup(self, t: int | Tensor) -> tuple[int, int]:
        plan = self._plan
        if plan is None:
            raise RuntimeError(f"{type(self).__name__}.step needs the sampling timesteps: "
                               "call set_timesteps(num_inference_steps) first")
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise ValueError(f"step takes one timestep (an int or a 0-d tensor), got a "
                                 f"tensor of shape {tuple(t.shape)}")
            t = t.item()
        if isinstance(t, float) and t.is_integer():
            t = int(t)
        if not isinstance(t, int) or t not in plan.prev:
            shown = ", ".join(map(str, plan.order[:8])) + (", …" if len(plan.order) > 8 else "")
            raise ValueError(f"timestep {t!r} is not one of the scheduler's timesteps "
                             f"[{shown}] (set by set_timesteps)")
        return t, plan.prev[t]

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t as a float; ``t = −1`` (past the end) gives :attr:`final_alpha_cumprod`."""
        return self.final_alpha_cumprod if t < 0 else self._ab[t]

    # ------------------------------------------------------------- closed forms

    def _alpha_bar_like(self, t: int | Tensor, like: Tensor, *, table_dtype: bool = False):
        """ᾱ_t for ``t`` broadcast over ``like`` as diffusers' ``add_noise`` does.

        An int or a 0-d tensor gives a float. Any other tensor is flattened to ``n``
        timesteps and shaped ``(n, 1, …, 1)`` against ``like``'s trailing dimensions, so
        ``n`` must be 1 (one t for the whole batch), the batch size (one t per sample),
        or anything when the batch is 1 (one sample noised at ``n`` timesteps). The
        tensor is in ``like``'s dtype, or in the table's (float64; float32 on MPS) with
        ``table_dtype``."""
        T = self.config.num_train_timesteps
        if not isinstance(t, Tensor) or t.dim() == 0:
            ti = int(t)
            if not 0 <= ti < T:
                raise ValueError(f"timestep {ti} is outside [0, {T}) (num_train_timesteps)")
            return self._ab[ti]
        flat = t.flatten()
        batch = like.shape[0] if like.dim() else 1
        if flat.numel() not in (1, batch) and batch != 1:
            raise ValueError(f"t must be an int or a tensor of 1 or {batch} timesteps (the "
                             f"batch size) to broadcast over the batch, got shape "
                             f"{tuple(t.shape)}")
        if flat.device.type == "cpu" and ((flat < 0).any() or (flat >= T).any()):
            raise ValueError(f"timesteps must lie in [0, {T}) (num_train_timesteps), got "
                             f"min {int(flat.min())}, max {int(flat.max())}")
        table = self._table(like.device)
        ab = table[flat.to(device=table.device, dtype=torch.long)]
        ab = ab.reshape(-1, *([1] * (like.dim() - 1)))
        return ab if table_dtype else ab.to(like.dtype)

    def _coefficients(self, t: int | Tensor, like: Tensor):
        """(√ᾱ_t, √(1−ᾱ_t)), computed in float64 and then cast to ``like``'s dtype, so
        that a batched ``t`` gives what an int ``t`` gives (1 − ᾱ_t rounded in float32
        would lose three digits near t = 0)."""
        ab = self._alpha_bar_like(t, like, table_dtype=True)
        if isinstance(ab, float):
            return math.sqrt(ab), math.sqrt(1 - ab)
        return ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype)

    def _table(self, device: torch.device) -> Tensor:
        table = self._on_device.get(device)
        if table is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            table = self.alphas_cumprod.to(device=device, dtype=dtype)
            self._on_device[device] = table
        return table

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (``t``: an int or a tensor of timesteps that
        broadcasts over the batch as in diffusers: 0-d, (1,), (B,), (B, 1), …)."""
        a, b = self._coefficients(t, x0)
        return a * x0 + b * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """The v target √ᾱ_t·ε − √(1−ᾱ_t)·x0 (diffusers' ``get_velocity``)."""
        a, b = self._coefficients(t, x0)
        return a * noise - b * x0

    get_velocity = velocity

    def training_target(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """What the model should output for ``prediction_type``: ε, v or x0."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.velocity(x0, noise, t)
        return x0

    def pred_original_sample(self, model_output: Tensor, t: int | Tensor,
                             sample: Tensor) -> Tensor:
        """x̂0 from the model output at x_t = ``sample`` (exact, before clip/threshold)."""
        ab = self._alpha_bar_like(t, sample)
        return sm.to_x0(self.config.prediction_type, model_output, sample, ab)

    def pred_epsilon(self, model_output: Tensor, t: int | Tensor, sample: Tensor) -> Tensor:
        """ε̂ from the model output at x_t = ``sample``."""
        ab = self._alpha_bar_like(t, sample)
        return sm.to_epsilon(self.config.prediction_type, model_output, sample, ab)

    def clip_x0(self, x0: Tensor) -> Tensor:
        """x̂0 after dynamic thresholding (``thresholding``) or clipping (``clip_sample``)."""
        cfg = self.config
        if cfg.thresholding:
            return sm.dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
        if cfg.clip_sample:
            return x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        return x0

    def posterior_coefficients(self, t: int, prev_t: int | None = None
                               ) -> tuple[float, float, float]:
        """``(c0, ct, var)`` of q(x_prev | x_t, x0) = N(c0·x0 + ct·x_t, var) for the jump
        t → ``prev_t`` (default t − 1: DDPM eq. 7); prev_t = −1 uses ᾱ = 1."""
        prev_t = t - 1 if prev_t is None else prev_t
        ab_prev = 1.0 if prev_t < 0 else self._ab[prev_t]
        c0, ct, var, _ = sm.posterior(self._ab[t], ab_prev)
        return c0, ct, var

    def scale_model_input(self, sample: Tensor, t: int | Tensor | None = None) -> Tensor:
        """Identity (DDPM/DDIM need no input scaling; kept for diffusers-style loops)."""
        return sample

    # -------------------------------------------------------------------- step

    def _prepare(self, model_output: Tensor, t: int | Tensor, sample: Tensor
                 ) -> tuple[int, int, float, Tensor, Tensor]:
        """Look t up; return (t, prev, ᾱ_t, unclipped x̂0, ε̂)."""
        t, prev = self._lookup(t)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output {tuple(model_output.shape)} and sample "
                             f"{tuple(sample.shape)} must have the same shape")
        ab_t = self._ab[t]
        kind = self.config.prediction_type
        if ab_t <= 0.0 and kind == "epsilon":
            raise ValueError(f"ᾱ_t is 0 at t={t} (rescale_betas_zero_snr): x0 cannot be "
                             "recovered from an ε prediction there; use prediction_type="
                             "'v_prediction' (or 'sample')")
        x0 = sm.to_x0(kind, model_output, sample, ab_t)
        eps = sm.to_epsilon(kind, model_output, sample, ab_t)
        return t, prev, ab_t, x0, eps


class DDPMScheduler(_Scheduler):
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


class DDIMScheduler(_Scheduler):
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
