r"""The Diffusion-DPO loss (Wallace et al. 2023) from the project's preference losses.

A diffusion model has no tractable ``log π(x0|c)``; Diffusion-DPO replaces it, per
pair and per draw of ``(t, ε)``, by the negative denoising error, an ELBO surrogate.
For a pair (winner ``w``, loser ``l``, the same caption ``c``) with latents ``z0^w``,
``z0^l``, **one** timestep ``t`` and **one** noise ``ε`` shared by both images::

    x^w_t = √ᾱ_t z0^w + √(1−ᾱ_t) ε,   x^l_t likewise
    e_θ^w = ‖ε − ε̂_θ(x^w_t, t, c)‖²,  e_ref^w = ‖ε − ε̂_ref(x^w_t, t, c)‖²  (no grad)
    h     = T·ω(λ_t) · margin(chosen=−e_θ^w, rejected=−e_θ^l,
                             ref_chosen=−e_ref^w, ref_rejected=−e_ref^l)
          = T·ω(λ_t) · [(e_ref^w − e_θ^w) − (e_ref^l − e_θ^l)]

and the per-pair loss is one of :mod:`gaf.plugins.preference.losses` applied to ``h``
with ``β`` (:data:`PAIR_LOSSES`): ``dpo`` gives the paper's
``−log σ(β·T·ω(λ_t)·[…])``. Those functions are used as they are: they get a margin
and a β and never learn that a diffusion model made them.

Choices (each a parameter of the functions below, fixed by the objective):

* **ω(λ_t) = 1 and T folded into β.** The paper's weighting is a constant; so is this
  one (``weight = 1``), and the paper's ``β·T`` is this module's ``β``.
* **Errors are averaged over the latent elements** (``reduction = "mean"``), as the
  diffusers training script does and as the paper's β values assume. ``"sum"``
  multiplies ``h`` by the number of latent elements ``N``, so ``β_sum = β_mean / N``
  gives the same loss.
* **β must be re-derived for this latent size.** The paper's 2,500–5,000 are for
  Stable Diffusion's 4×64×64 latents with mean errors; the scale of ``h`` depends on the
  model, the latents and the learning rate, so those values do not transfer. (The
  diffusers script multiplies by ``−β/2``: its ``beta_dpo`` is twice this β.)
* **v- and x0-prediction** are converted to the ε error with the exact weight
  (:func:`epsilon_error_weight`): from ``ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) x_t`` and the same
  identity for the true ``v``, ``ε − ε̂ = √ᾱ_t (v − v̂)``, so
  ``‖ε − ε̂‖² = ᾱ_t ‖v − v̂‖²``; from ``ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t)``,
  ``‖ε − ε̂‖² = ᾱ_t/(1−ᾱ_t) ‖x0 − x̂0‖²``.
* **ipo** receives the same ``h``: with mean errors it already is a per-element
  average, the analogue of IPO's per-token mean log-ratio.

At the first step the policy is the reference, so ``h = 0`` and ``dpo`` gives ``ln 2``
(with a UNet, up to round-off: its no-grad inference kernels, which the reference runs,
and its training kernels differ in the last bits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gaf.plugins.preference import losses

__all__ = ["PAIR_LOSSES", "REDUCTIONS", "epsilon_error_weight", "denoising_errors",
           "pair_margin", "pair_loss"]

REDUCTIONS = ("mean", "sum")


def _dpo(h: Tensor, beta: float, eps: float) -> Tensor:
    return losses.dpo_loss(h, beta)


def _cdpo(h: Tensor, beta: float, eps: float) -> Tensor:
    return losses.cdpo_loss(h, beta, eps)


def _robust(h: Tensor, beta: float, eps: float) -> Tensor:
    return losses.robust_loss(h, beta, eps)


def _ipo(h: Tensor, beta: float, eps: float) -> Tensor:
    return losses.ipo_loss(h, beta)


def _hinge(h: Tensor, beta: float, eps: float) -> Tensor:
    return losses.hinge_loss(h, beta)


#: loss name → ``f(h, β, label_smoothing) -> (B,)`` over :mod:`~gaf.plugins.preference.losses`
#: (``label_smoothing`` is read by ``cdpo`` and ``robust`` only)
PAIR_LOSSES: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "dpo": _dpo, "cdpo": _cdpo, "robust": _robust, "ipo": _ipo, "hinge": _hinge}


def epsilon_error_weight(prediction_type: str, alpha_bar: Tensor) -> Tensor:
    """The factor that turns a squared error in the model's parameterisation into the
    squared ε error at the same ``x_t``: 1 for ``epsilon``, ``ᾱ_t`` for
    ``v_prediction``, ``ᾱ_t/(1−ᾱ_t)`` for ``sample`` (module docstring)."""
    if prediction_type == "epsilon":
        return torch.ones_like(alpha_bar)
    if prediction_type == "v_prediction":
        return alpha_bar
    if prediction_type == "sample":
        return alpha_bar / (1 - alpha_bar)
    raise ValueError(f"unknown prediction_type {prediction_type!r} "
                     f"(epsilon, v_prediction or sample)")


def denoising_errors(output: Tensor, target: Tensor, weight: Tensor,
                     reduction: str = "mean") -> Tensor:
    """``(B,)``: ``weight_b · ‖output_b − target_b‖²``, averaged (``"mean"``) or summed
    (``"sum"``) over each item's elements, in float32 (or float64 for float64 inputs).
    ``weight`` ``(B,)`` is :func:`epsilon_error_weight` of each item's ``ᾱ_t``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    dtype = torch.promote_types(output.dtype, torch.float32)
    diff = (output.to(dtype) - target.to(dtype)).flatten(1)
    sq = diff.pow(2)
    per = sq.mean(1) if reduction == "mean" else sq.sum(1)
    return per * weight.to(device=per.device, dtype=dtype)


def pair_margin(errors: Tensor, ref_errors: Tensor, weight: float | Tensor = 1.0) -> Tensor:
    """``h`` ``(B,)`` of ``B`` pairs from the ε errors ``(2B,)`` of the policy and the
    reference, winners first (rows ``0 … B−1``) then losers in the same order:
    ``weight · losses.margin(−e_θ^w, −e_θ^l, −e_ref^w, −e_ref^l)``; ``weight`` is
    ``T·ω(λ_t)`` (1 here, module docstring)."""
    if errors.shape != ref_errors.shape or errors.dim() != 1 or len(errors) % 2:
        raise ValueError(f"pair_margin needs two (2B,) error vectors, got "
                         f"{tuple(errors.shape)} and {tuple(ref_errors.shape)}")
    e_w, e_l = errors.chunk(2)
    r_w, r_l = ref_errors.chunk(2)
    return weight * losses.margin(-e_w, -e_l, -r_w, -r_l)


def pair_loss(name: str, h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """The per-pair loss ``(B,)`` named ``name`` (:data:`PAIR_LOSSES`) at margin ``h``."""
    try:
        fn = PAIR_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown pair loss {name!r} ({', '.join(PAIR_LOSSES)})") from None
    return fn(h, beta, label_smoothing)
