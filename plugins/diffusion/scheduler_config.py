"""The options shared by the DDPM and DDIM schedulers (diffusers' names and defaults).

One config class serves both schedulers, so a config saved by one loads into the other.
The maths behind each option is in :mod:`gaf.plugins.diffusion.schedulers`.
"""

from __future__ import annotations

from typing import Literal

import attrs

from gaf.config import option, option_error

__all__ = ["SchedulerConfig", "validate"]

@attrs.define
class SchedulerConfig:
    """The options of both DDPM and DDIM (diffusers' names and defaults).

    DDPM ignores ``eta`` and ``set_alpha_to_one``; DDIM ignores ``variance_type``.
    """

    num_train_timesteps: int = option(1000, "T, the number of training diffusion steps", ge=1)
    beta_start: float = option(0.0001, "first β of the linear / scaled_linear schedules")
    beta_end: float = option(0.02, "last β of the linear / scaled_linear schedules")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option(
        "linear", "linear β, scaled_linear (√β linear, LDM/SD), squaredcos_cap_v2 (cosine ᾱ)")
    trained_betas: tuple[float, ...] | None = option(
        None, "explicit β_0 … β_{T-1} (length T, only the last may be 1); overrides "
              "beta_schedule", gt=0, le=1)
    variance_type: Literal["fixed_small", "fixed_large"] = option(
        "fixed_small", "DDPM step noise variance: posterior β̃_t (fixed_small) or β_t")
    clip_sample: bool = option(True, "clamp x̂0 to ±clip_sample_range at each step "
                                     "(False for latent models)")
    clip_sample_range: float = option(1.0, "the bound of clip_sample", gt=0)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = option(
        "epsilon", "what the model predicts: the noise ε, v = √ᾱ·ε − √(1−ᾱ)·x0, or x0")
    thresholding: bool = option(False, "Imagen dynamic thresholding of x̂0 (replaces "
                                       "clip_sample; pixel-space models only)")
    dynamic_thresholding_ratio: float = option(
        0.995, "quantile of |x̂0| used as the threshold s", gt=0, le=1)
    sample_max_value: float = option(1.0, "upper bound on the dynamic threshold s", ge=1)
    timestep_spacing: Literal["leading", "trailing", "linspace"] = option(
        "leading", "how set_timesteps(N) picks N of the T steps (see the module doc)")
    steps_offset: int = option(0, "added to every leading timestep (SD uses 1; "
                                  "< num_train_timesteps)", ge=0)
    rescale_betas_zero_snr: bool = option(
        False, "rescale betas so that ᾱ_{T-1} = 0 (zero terminal SNR; use v_prediction)")
    set_alpha_to_one: bool = option(
        True, "DDIM: ᾱ past the last step is 1 (else ᾱ_0)")
    eta: float = option(0.0, "DDIM noise weight η: 0 deterministic, 1 DDPM-like", ge=0)

    def __attrs_post_init__(self) -> None:
        if self.trained_betas is not None:
            try:
                self.trained_betas = tuple(float(b) for b in self.trained_betas)
            except (TypeError, ValueError):
                raise option_error("trained_betas", "must be a list of numbers or None",
                                   self.trained_betas) from None
        validate(self)


def validate(cfg: SchedulerConfig) -> None:
    """Raise :class:`OptionError` (a :class:`BadConfig`) for a broken rule that relates
    options; single-option bounds and choices are declared on the fields (``option``)."""
    for name in ("num_train_timesteps", "steps_offset"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise option_error(name, "must be an int", value)
    if cfg.steps_offset >= cfg.num_train_timesteps:
        raise option_error("steps_offset", "must be < num_train_timesteps "
                           f"({cfg.num_train_timesteps})", cfg.steps_offset)
    if cfg.trained_betas is None and cfg.beta_schedule != "squaredcos_cap_v2":
        for name in ("beta_start", "beta_end"):
            value = getattr(cfg, name)
            if not 0 < value < 1:
                raise option_error(name, f"must be in (0, 1) with beta_schedule="
                                   f"{cfg.beta_schedule!r}", value)
    if cfg.trained_betas is not None:
        if len(cfg.trained_betas) != cfg.num_train_timesteps:
            raise option_error("trained_betas", f"must have num_train_timesteps = "
                               f"{cfg.num_train_timesteps} values (it has "
                               f"{len(cfg.trained_betas)})", cfg.trained_betas)
        if any(b >= 1 for b in cfg.trained_betas[:-1]):
            raise option_error("trained_betas", "must be < 1 (only the last may be 1)",
                               cfg.trained_betas)
