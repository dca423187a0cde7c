"""Public bases of gaf's schedulers: :class:`NoiseSchedule` and :class:`SchedulerBase`.

A scheduler is two things: the *noise schedule* of the forward process (β, ᾱ,
``add_noise``, ``velocity``, ``training_target``: what training uses) and a *sampler*
walking it backwards (``set_timesteps``, ``step``, ``new_state``). :class:`NoiseSchedule`
is the first; :class:`SchedulerBase` adds the timestep plan and the step contract and is
the base of ``ddpm``, ``ddim`` and third-party samplers (the DPM-Solver example). The
maths is documented in :mod:`gaf.plugins.diffusion.schedulers`.
"""

from __future__ import annotations

import abc
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

__all__ = ["NoiseSchedule", "SchedulerBase", "SchedulerConfig"]


@attrs.frozen
class _Plan:
    """What set_timesteps fixes: swapped in one assignment, never mutated."""

    timesteps: Tensor
    order: tuple[int, ...]
    prev: Mapping[int, int]


class NoiseSchedule:
    """The forward process of a :class:`SchedulerConfig`: β, ᾱ, noising and targets.

    What training needs and sampling does not: ``betas`` / ``alphas`` /
    ``alphas_cumprod`` (float64, shape (T,)), :meth:`add_noise`, :meth:`velocity`,
    :meth:`training_target`, the prediction-type conversions (:meth:`pred_original_sample`,
    :meth:`pred_epsilon`), :meth:`clip_x0`, and the config round-trip (``config``,
    :meth:`from_config`). A subclass with a config of its own sets ``Config`` to an attrs
    subclass of :class:`SchedulerConfig`; :meth:`from_config` then keeps the keys that
    ``Config`` knows and a plain ``SchedulerConfig`` (a ``ddpm`` run's) is widened to it.
    """

    Config: type[SchedulerConfig] = SchedulerConfig

    def __init__(self, config: SchedulerConfig | None = None):
        Config = type(self).Config
        if config is None:
            config = Config()
        elif not isinstance(config, SchedulerConfig):
            raise BadConfig(f"{type(self).__name__} takes a SchedulerConfig, got "
                            f"{type(config).__name__} (use {type(self).__name__}.from_config)")
        elif not isinstance(config, Config):
            config = from_dict(Config, {k: v for k, v in to_dict(config).items()
                                        if k in set(field_names(Config))},
                               where=type(self).__name__)  # e.g. a plain ddpm config
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


    # ------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, config: Any, **overrides: Any):
        """Build from a :class:`SchedulerConfig`, another attrs config or a mapping (a
        gaf.json ``config`` or a diffusers ``scheduler_config.json``): keys this config
        does not know (``_class_name``, ``skip_prk_steps``, …) are dropped."""
        if isinstance(config, cls.Config) and not overrides:
            return cls(config)
        if attrs.has(type(config)):
            data = to_dict(config)
        elif isinstance(config, Mapping):
            data = dict(config)
        else:
            raise BadConfig(f"{cls.__name__}.from_config takes a config or a mapping, got "
                            f"{type(config).__name__}")
        data.update(overrides)
        known = set(field_names(cls.Config))
        kept = {k: v for k, v in data.items() if k in known}
        return cls(from_dict(cls.Config, kept, where=cls.__name__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

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


class SchedulerBase(NoiseSchedule, abc.ABC):
    """A :class:`NoiseSchedule` plus the sampling contract (:class:`gaf.interfaces.Scheduler`).

    The reference for third-party samplers: subclass this (not ``DDIMScheduler``) to get
    the schedule, the timestep plan and the conversions, and write :meth:`step`.

    * :meth:`set_timesteps` (given) fixes ``timesteps``: a LongTensor of strictly
      decreasing ints in [0, T), by ``timestep_spacing`` or an explicit list;
    * ``step(model_output, t, sample, *, generator=None, **kw)`` (abstract) returns the
      sample at the next entry of ``timesteps`` after ``t`` (:meth:`previous_timestep`;
      −1 past the last, where ᾱ is :attr:`final_alpha_cumprod`). ``t`` must be one of
      ``timesteps``; the step may be called in that order only. It keeps nothing on the
      scheduler between steps, so one scheduler serves concurrent sampling runs;
    * :meth:`new_state` gives a run's memory: a sampler calls it once per sampling run
      and, if it is not None, passes it to every ``step(..., state=state)``. The default
      (None) is a stateless sampler, whose ``step`` need not accept ``state``; a
      multistep solver returns a fresh object (e.g. a dict) that its step reads and
      writes.
    """

    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    def __init__(self, config: SchedulerConfig | None = None):
        super().__init__(config)
        self._plan: _Plan | None = None

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

    def scale_model_input(self, sample: Tensor, t: int | Tensor | None = None) -> Tensor:
        """Identity (DDPM/DDIM need no input scaling; kept for diffusers-style loops)."""
        return sample

    def new_state(self) -> Any:
        """A fresh memory for one sampling run, passed to every ``step(..., state=)``;
        None (the default) for a stateless sampler."""
        return None

    @abc.abstractmethod
    def step(self, model_output: Tensor, t: int | Tensor, sample: Tensor, *,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             **kwargs: Any) -> Tensor:
        """The sample at :meth:`previous_timestep` (t) from the model output at ``t``
        (every sampler defines it; a subclass without one cannot be built)."""

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


