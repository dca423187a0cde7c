"""Closed forms behind the DDPM/DDIM schedulers (:mod:`gaf.plugins.diffusion.schedulers`).

Pure functions, no state: β schedules, zero-terminal-SNR rescaling, the three timestep
spacings, the conversions between a model output and (x̂0, ε̂), the DDPM posterior
coefficients, the DDIM σ_t(η), Imagen's dynamic thresholding and the draw of the step
noise z (one generator, or one per batch row). Schedules are built in
float64 (diffusers builds them in float32; the difference is below 1e-6 in ᾱ_t).

Notation: ``T`` = ``num_train_timesteps``, β_t the per-step noise variances
(t = 0 … T−1), α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (``alphas_cumprod``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["BETA_SCHEDULES", "TIMESTEP_SPACINGS", "PREDICTION_TYPES", "VARIANCE_TYPES",
           "make_betas", "cosine_betas", "rescale_zero_terminal_snr", "make_timesteps",
           "to_x0", "to_epsilon", "posterior", "ddim_sigma", "dynamic_threshold",
           "draw_noise", "check_descending", "sqrt"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule (diffusers' ``squaredcos_cap_v2``).

    ᾱ(s) = cos²((s + 0.008)/1.008 · π/2) on s ∈ [0, 1]; β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T),
    max_beta). The cap keeps the last β below 1 (ᾱ(1) = 0 would make it exactly 1).
    """
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta)
                         for i in range(T)], dtype=torch.float64)


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float,
               beta_end: float) -> Tensor:
    """β_0 … β_{T−1} (float64) for a named schedule.

    * ``linear``: ``linspace(beta_start, beta_end, T)`` (DDPM: 1e-4 → 0.02);
    * ``scaled_linear``: ``linspace(√beta_start, √beta_end, T)²`` (LDM / Stable Diffusion,
      0.00085 → 0.012);
    * ``squaredcos_cap_v2``: :func:`cosine_betas` (ignores beta_start / beta_end).
    """
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(T)
    raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, "
                     f"got {beta_schedule!r}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2023 (Algorithm 1): shift and scale √ᾱ_t so that √ᾱ_{T−1} = 0 while
    √ᾱ_0 is unchanged, then recover β_t = 1 − ᾱ_t/ᾱ_{t−1}. The last β becomes exactly 1,
    so x_{T−1} is pure noise (SNR 0), which ε-prediction cannot invert (x̂0 is undefined
    there): pair it with ``v_prediction`` and ``trailing`` spacing."""
    sqrt_ab = torch.cumprod(1.0 - betas.to(torch.float64), 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def make_timesteps(spacing: str, num_inference_steps: int, num_train_timesteps: int,
                   steps_offset: int = 0) -> list[int]:
    """The ``N`` = ``num_inference_steps`` sampling timesteps, strictly decreasing.

    * ``leading``: ``k·(T // N) + steps_offset`` for k = N−1 … 0 (T=1000, N=10:
      900 … 0; with steps_offset=1: 901 … 1). Never visits t = T−1.
    * ``trailing``: ``round(T − k·T/N) − 1`` for k = 0 … N−1 (999, 899, … 99): starts at
      T−1, the only spacing that samples from pure noise under zero-terminal-SNR.
    * ``linspace``: ``round(linspace(0, T−1, N))`` reversed (999, 888, … 0).

    Rounding is half-to-even on the same float64 values numpy computes, so the lists
    equal diffusers' bit for bit, except that diffusers' ``trailing`` sometimes returns
    N+1 entries ending in −1 (for example T=1000, N=61); here it is always exactly N.
    ``steps_offset`` applies to ``leading`` only (as in diffusers).
    """
    T, N = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        ratio = T // N
        return [k * ratio + steps_offset for k in range(N - 1, -1, -1)]
    if spacing == "trailing":
        step = T / N
        delta = (T - step) - T  # numpy.arange's fill uses start + k·(x1 − x0)
        return [round(T + k * delta) - 1 for k in range(N)]
    if spacing == "linspace":
        if N == 1:
            return [0]
        step = (T - 1) / (N - 1)
        values = [round(k * step) for k in range(N - 1)] + [T - 1]
        return values[::-1]
    raise ValueError(f"timestep_spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, "
                     f"got {spacing!r}")


def to_x0(prediction_type: str, model_output: Tensor, sample: Tensor, alpha_bar) -> Tensor:
    """x̂0 from a model output at noise level ᾱ (float or broadcastable tensor).

    With x_t = √ᾱ·x0 + √(1−ᾱ)·ε and v = √ᾱ·ε − √(1−ᾱ)·x0:
    epsilon → (x_t − √(1−ᾱ)·ε̂)/√ᾱ; v_prediction → √ᾱ·x_t − √(1−ᾱ)·v̂; sample → x̂0.
    """
    if prediction_type == "epsilon":
        return (sample - sqrt(1 - alpha_bar) * model_output) / sqrt(alpha_bar)
    if prediction_type == "v_prediction":
        return sqrt(alpha_bar) * sample - sqrt(1 - alpha_bar) * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                     f"got {prediction_type!r}")


def to_epsilon(prediction_type: str, model_output: Tensor, sample: Tensor,
               alpha_bar) -> Tensor:
    """ε̂ from a model output: epsilon → ε̂; v_prediction → √ᾱ·v̂ + √(1−ᾱ)·x_t;
    sample → (x_t − √ᾱ·x̂0)/√(1−ᾱ)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return sqrt(alpha_bar) * model_output + sqrt(1 - alpha_bar) * sample
    if prediction_type == "sample":
        return (sample - sqrt(alpha_bar) * model_output) / sqrt(1 - alpha_bar)
    raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                     f"got {prediction_type!r}")


def posterior(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float, float, float]:
    """q(x_prev | x_t, x0) = N(c0·x0 + ct·x_t, var) for a jump t → prev (DDPM eq. 6–7).

    With the effective step α'_t = ᾱ_t/ᾱ_prev and β'_t = 1 − α'_t (α_t, β_t when
    prev = t−1): c0 = √ᾱ_prev·β'_t/(1−ᾱ_t), ct = √α'_t·(1−ᾱ_prev)/(1−ᾱ_t),
    var = β̃ = (1−ᾱ_prev)/(1−ᾱ_t)·β'_t. Returns ``(c0, ct, var, β'_t)``.
    """
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1.0 - alpha_t
    denom = 1.0 - alpha_bar_t
    c0 = math.sqrt(alpha_bar_prev) * beta_t / denom
    ct = math.sqrt(alpha_t) * (1.0 - alpha_bar_prev) / denom
    var = (1.0 - alpha_bar_prev) / denom * beta_t
    return c0, ct, var, beta_t


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """σ_t(η) = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev) (DDIM eq. 16): η = 0 is the
    deterministic DDIM, η = 1 has DDPM's posterior variance."""
    var = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev)
    return eta * math.sqrt(max(var, 0.0))


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Imagen's dynamic thresholding of x̂0, per sample.

    s = the ``ratio`` quantile of |x̂0| over all of a sample's elements, clamped to
    [1, max_value]; x̂0 ← clamp(x̂0, −s, s)/s. With s = 1 this is plain clipping to
    [−1, 1]; above, saturated pixels are pulled inwards instead of flattened.
    """
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile needs float32/64
    s = row_quantile(flat.abs(), ratio).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)


def row_quantile(a: Tensor, q: float) -> Tensor:
    """``torch.quantile(a, q, dim=1)`` of a float32/64 ``(rows, n)`` tensor, the same values
    (linear interpolation; a row holding a NaN gives NaN), found by selecting each row's
    ``n - floor(q (n - 1))`` largest values instead of sorting the whole row: the
    thresholding quantiles near 1 need only the top few."""
    n = a.shape[1]
    rank = torch.tensor(q, dtype=a.dtype) * (n - 1)  # in a's dtype, as torch.quantile
    below_rank = int(rank)
    k = n - below_rank
    top = a.topk(k, dim=1).values  # descending: column k - 1 is the below_rank-th smallest
    below = top[:, k - 1]
    above = top[:, k - 2] if float(rank) > below_rank else below
    # the weight as a Python float (the same float32 value): no CPU tensor meets ``a``'s
    # device
    out = torch.lerp(below, above, float(rank - below_rank))
    return torch.where(a.isnan().any(dim=1), torch.nan, out)


def sqrt(x):
    """√x for a float (math.sqrt) or a tensor (elementwise)."""
    return x ** 0.5 if isinstance(x, Tensor) else math.sqrt(x)


def check_descending(timesteps: Sequence[int], num_train_timesteps: int) -> None:
    """Raise ValueError unless ``timesteps`` is non-empty, strictly decreasing and in
    [0, num_train_timesteps)."""
    if not timesteps:
        raise ValueError("timesteps must not be empty")
    if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"timesteps must be strictly decreasing, got {list(timesteps)[:12]}")
    if timesteps[-1] < 0 or timesteps[0] >= num_train_timesteps:
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}) "
                         f"(num_train_timesteps), got {timesteps[0]} … {timesteps[-1]}")


def _randn(like: Tensor, generator: Any) -> Tensor:
    """Standard normal noise shaped like ``like``; ``generator`` may be a list (one per
    batch row). Drawn on the generator's device, then moved."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != like.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {like.shape[0]}")
        return torch.cat([_randn(like[i:i + 1], g) for i, g in enumerate(generator)])
    device = generator.device if generator is not None else like.device
    z = torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype)
    return z.to(like.device)


def draw_noise(like: Tensor, generator: Any, variance_noise: Tensor | None) -> Tensor:
    """z for a step: ``variance_noise`` when given (checked), else a fresh draw."""
    if variance_noise is not None:
        if generator is not None:
            raise ValueError("pass generator or variance_noise, not both")
        if variance_noise.shape != like.shape:
            raise ValueError(f"variance_noise has shape {tuple(variance_noise.shape)}, "
                             f"expected {tuple(like.shape)}")
        return variance_noise.to(device=like.device, dtype=like.dtype)
    return _randn(like, generator)
