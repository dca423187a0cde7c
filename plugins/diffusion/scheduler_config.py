"""The options shared by the DDPM and DDIM schedulers (diffusers' names and defaults).

One config class serves both schedulers, so a config saved by one loads into the other.
The maths behind each option is in :mod:`gaf.plugins.diffusion.schedulers`.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs

from gaf.config import option
from gaf.errors import BadConfig

from . import schedule_math as sm

__all__ = ["SchedulerConfig", "validate"]

_CHOICES = {"beta_schedule": sm.BETA_SCHEDULES, "prediction_type": sm.PREDICTION_TYPES,
            "timestep_spacing": sm.TIMESTEP_SPACINGS, "variance_type": sm.VARIANCE_TYPES}


@attrs.define
class SchedulerConfig:
    """The options of both DDPM and DDIM (diffusers' names and defaults).

    DDPM ignores ``eta`` and ``set_alpha_to_one``; DDIM ignores ``variance_type``.
    """

    num_train_timesteps: int = option(1000, "T, the number of training diffusion steps")
    beta_start: float = option(0.0001, "first β of the linear / scaled_linear schedules")
    beta_end: float = option(0.02, "last β of the linear / scaled_linear schedules")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option(
        "linear", "linear β, scaled_linear (√β linear, LDM/SD), squaredcos_cap_v2 (cosine ᾱ)")
    trained_betas: tuple[float, ...] | None = option(
        None, "explicit β_0 … β_{T-1} (length T); overrides beta_schedule")
    variance_type: Literal["fixed_small", "fixed_large"] = option(
        "fixed_small", "DDPM step noise variance: posterior β̃_t (fixed_small) or β_t")
    clip_sample: bool = option(True, "clamp x̂0 to ±clip_sample_range at each step "
                                     "(False for latent models)")
    clip_sample_range: float = option(1.0, "the bound of clip_sample (> 0)")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = option(
        "epsilon", "what the model predicts: the noise ε, v = √ᾱ·ε − √(1−ᾱ)·x0, or x0")
    thresholding: bool = option(False, "Imagen dynamic thresholding of x̂0 (replaces "
                                       "clip_sample; pixel-space models only)")
    dynamic_thresholding_ratio: float = option(
        0.995, "quantile of |x̂0| used as the threshold s (0 < ratio <= 1)")
    sample_max_value: float = option(1.0, "upper bound on the dynamic threshold s (>= 1)")
    timestep_spacing: Literal["leading", "trailing", "linspace"] = option(
        "leading", "how set_timesteps(N) picks N of the T steps (see the module doc)")
    steps_offset: int = option(0, "added to every leading timestep (SD uses 1)")
    rescale_betas_zero_snr: bool = option(
        False, "rescale betas so that ᾱ_{T-1} = 0 (zero terminal SNR; use v_prediction)")
    set_alpha_to_one: bool = option(
        True, "DDIM: ᾱ past the last step is 1 (else ᾱ_0)")
    eta: float = option(0.0, "DDIM noise weight η >= 0: 0 deterministic, 1 DDPM-like")

    def __attrs_post_init__(self) -> None:
        if self.trained_betas is not None:
            try:
                self.trained_betas = tuple(float(b) for b in self.trained_betas)
            except (TypeError, ValueError):
                raise BadConfig("trained_betas must be a list of numbers or None, got "
                                f"{self.trained_betas!r}") from None
        validate(self)


def validate(cfg: SchedulerConfig) -> None:
    """Raise :class:`BadConfig` naming the field (and the allowed values) of a bad option."""
    for name, allowed in _CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise BadConfig(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, "
                            f"got {value!r}")
    if not (isinstance(cfg.num_train_timesteps, int) and cfg.num_train_timesteps >= 1):
        raise BadConfig(f"num_train_timesteps must be an int >= 1, got {cfg.num_train_timesteps!r}")
    if not (isinstance(cfg.steps_offset, int) and 0 <= cfg.steps_offset < cfg.num_train_timesteps):
        raise BadConfig("steps_offset must be an int in [0, num_train_timesteps), "
                        f"got {cfg.steps_offset!r}")
    if cfg.trained_betas is None and cfg.beta_schedule != "squaredcos_cap_v2":
        if not 0 < cfg.beta_start < 1 or not 0 < cfg.beta_end < 1:
            raise BadConfig("beta_start and beta_end must lie in (0, 1), got "
                            f"beta_start={cfg.beta_start}, beta_end={cfg.beta_end}")
    if cfg.trained_betas is not None:
        if len(cfg.trained_betas) != cfg.num_train_timesteps:
            raise BadConfig(f"trained_betas has {len(cfg.trained_betas)} values but "
                            f"num_train_timesteps is {cfg.num_train_timesteps}")
        if not all(0 < b <= 1 for b in cfg.trained_betas) or any(
                b >= 1 for b in cfg.trained_betas[:-1]):
            raise BadConfig("trained_betas must lie in (0, 1) (only the last may be 1)")
    if not cfg.clip_sample_range > 0:
        raise BadConfig(f"clip_sample_range must be > 0, got {cfg.clip_sample_range}")
    if not 0 < cfg.dynamic_thresholding_ratio <= 1:
        raise BadConfig("dynamic_thresholding_ratio must be in (0, 1], got "
                        f"{cfg.dynamic_thresholding_ratio}")
    if not cfg.sample_max_value >= 1:
        raise BadConfig(f"sample_max_value must be >= 1, got {cfg.sample_max_value}")
    if not (cfg.eta >= 0 and math.isfinite(cfg.eta)):
        raise BadConfig(f"eta must be a finite number >= 0, got {cfg.eta}")
