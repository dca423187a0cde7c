"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) as a gaf scheduler.

The maths
---------
The forward process is gaf's (diffusers') discrete VP process: x_t = α_t·x0 + σ_t·ε with
α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), and λ_t = log(α_t/σ_t) the half log-SNR, which grows as t
falls. Written with the data prediction x̂0(x, λ), the probability-flow ODE has the
exact solution (DPM-Solver++ eq. 9), for a step from t to prev (h = λ_prev − λ_t > 0):

    x_prev = (σ_prev/σ_t)·x_t + σ_prev·∫_{λ_t}^{λ_prev} e^{λ}·x̂0(x_λ, λ) dλ.

The linear part is integrated exactly; only x̂0 is approximated:

* first order (x̂0 constant over the step):
  x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·x̂0. This is DDIM with η = 0
  exactly (expand e^{−h} = α_t·σ_prev/(σ_t·α_prev));
* second order, multistep (2M): with x̂0' the data prediction of the step before, made
  at λ' < λ_t, r = (λ_t − λ')/h and
  D = (1 + 1/(2r))·x̂0 − (1/(2r))·x̂0', x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^{−h} − 1)·D.
  D extrapolates x̂0 linearly in λ to the middle of the step, which cancels the O(h²)
  local error of the first-order step (diffusers' ``solver_type="midpoint"``).

Coefficients are computed in float64 from ratios, never from exp(log): e^{−h} is
α_t·σ_prev/(σ_t·α_prev) and 1/(2r) = h/(2(λ_t − λ')), so ᾱ = 0 (zero terminal SNR, λ =
−∞) and the final ᾱ = 1 (λ = +∞) need no special cases beyond the ones below.

Which update each step uses
---------------------------
* First order when there is no usable history: the first step of a run, a step whose
  ``state`` does not hold the data prediction of the step that led *into* this timestep
  (a fresh state, or one reused from another run: the history records where its step
  went, so a stale one is never used), ``state=None`` (stateless use) and
  ``solver_order=1``.
* The final step (after the last entry of ``timesteps``) goes to ᾱ = 1 when
  ``set_alpha_to_one`` (the default, like DDIM and diffusers' ``final_sigmas_type=
  "zero"``): σ_prev = 0, h = ∞ and the update is x_prev = x̂0, the current data
  prediction. (The multistep correction has no finite limit there, so this step is
  always first order.) With ``set_alpha_to_one=False`` the final step goes to ᾱ_0 (like
  diffusers' ``final_sigmas_type="sigma_min"``) and is an ordinary step.
* ``lower_order_final`` (default True, diffusers' rule): the final step is first order
  when fewer than 15 timesteps are used. It matters only when the final step is an
  ordinary step (``set_alpha_to_one=False``); it stabilises very short runs.
* A zero-length step (ᾱ_prev = ᾱ_t: ``set_alpha_to_one=False`` after a plan that ends at
  t = 0) returns the sample unchanged: e^{−h} = 1 and 1/(2r) = 0 there.

x̂0 comes from the model output by ``prediction_type`` (epsilon, v_prediction, sample:
gaf's closed forms), then goes through gaf's ``clip_x0`` (``thresholding``, else
``clip_sample``), as the config says. The history keeps the processed x̂0. With clipping
active the first-order step equals DDIM only where clipping did nothing: DDIM re-noises
with the unclipped ε̂, the solver with the ε implied by the clipped x̂0.

The state protocol
------------------
``new_state()`` returns an empty dict; a sampler makes one per sampling run and passes it
to every ``step(..., state=state)``. The step stores the data prediction it made (and
the timesteps it went from and to) in that dict, never on the scheduler, and finds the
previous timestep by looking ``t`` up in ``timesteps``: no step counter. One scheduler
can therefore serve several concurrent sampling runs (threads), each with its own state.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option, option_error
from gaf.plugins.diffusion import SchedulerBase, SchedulerConfig

__all__ = ["DPMSolverConfig", "DPMSolverPlusPlus2M", "half_log_snr", "LOWER_ORDER_FINAL_BELOW"]

#: ``lower_order_final`` makes the final step first order below this many timesteps.
LOWER_ORDER_FINAL_BELOW = 15


@attrs.define
class DPMSolverConfig(SchedulerConfig):
    """gaf's scheduler options plus the solver's own (``eta`` and ``variance_type`` are
    ignored: the solver is deterministic)."""

    # redefined only to say what they mean here (a ddpm / ddim config still loads)
    set_alpha_to_one: bool = option(
        True, "the final step goes to ᾱ = 1 and returns x̂0 (else it goes to ᾱ_0)")
    eta: float = option(0.0, "ignored: the solver is deterministic")
    solver_order: int = option(2, "2: DPM-Solver++(2M); 1: first order (= DDIM with eta 0)",
                               choices=(1, 2))
    lower_order_final: bool = option(
        True, "first-order final step when fewer than 15 timesteps (only matters with "
              "set_alpha_to_one=False)")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if isinstance(self.solver_order, bool):  # True == 1 passes choices=(1, 2)
            raise option_error("solver_order", "must be 1 or 2, not a bool", self.solver_order)


def half_log_snr(alpha_bar: float) -> float:
    """λ = log(α/σ) = ½·log(ᾱ/(1−ᾱ)): −inf at ᾱ = 0, +inf at ᾱ = 1."""
    if alpha_bar <= 0.0:
        return -math.inf
    if alpha_bar >= 1.0:
        return math.inf
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


class DPMSolverPlusPlus2M(SchedulerBase):
    """DPM-Solver++(2M): deterministic second-order multistep sampling with x̂0 (data) prediction.

    Schedule, timesteps, ``add_noise``, ``velocity``, the prediction-type conversions and
    ``from_config`` (keeping the keys :class:`DPMSolverConfig` knows, so a ``ddpm`` run's
    config or a diffusers ``scheduler_config.json`` loads) are gaf's: this class extends
    the public ``SchedulerBase`` for them; the solver is :meth:`step`. Use ``state = scheduler.new_state()`` once per sampling run and
    ``scheduler.step(out, t, x, state=state)``; see the module docstring for the maths.
    """

    Config = DPMSolverConfig

    @property
    def final_alpha_cumprod(self) -> float:
        """ᾱ past the last timestep: 1 with ``set_alpha_to_one`` (the final step returns
        x̂0), else ᾱ_0."""
        return 1.0 if self.config.set_alpha_to_one else self.alphas_cumprod[0].item()

    # ------------------------------------------------------------------ state

    def new_state(self) -> dict:  # the base's None means stateless
        """A fresh, empty history for one sampling run (pass it to every ``step``)."""
        return {}

    # ------------------------------------------------------------------- step

    def step(self, model_output: Tensor, t: int | Tensor, sample: Tensor, *,
             generator: torch.Generator | None = None, state: dict | None = None,
             **unused: Any) -> Tensor:
        """One solver step from ``t`` to the next entry of ``timesteps`` (or past the end).

        ``state`` is the dict from :meth:`new_state` for this sampling run: the step reads
        the previous data prediction from it (second order) and writes its own. With
        ``state=None`` nothing is remembered and every step is first order, which is
        exactly DDIM with η = 0 (up to ``clip_sample``/``thresholding``, see the module
        docstring). ``generator`` is accepted for the sampler interface and unused: the
        solver draws no noise. Other keyword arguments (``eta``, ``variance_noise``) are
        ignored for the same reason.
        """
        del generator, unused  # deterministic
        prev = self.previous_timestep(t)  # validates t (set_timesteps called, t planned)
        t = int(t.item()) if isinstance(t, Tensor) else int(t)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output {tuple(model_output.shape)} and sample "
                             f"{tuple(sample.shape)} must have the same shape")
        cfg = self.config
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(prev)
        if ab_t <= 0.0 and cfg.prediction_type == "epsilon":
            raise ValueError(f"ᾱ_t is 0 at t={t} (rescale_betas_zero_snr): x0 cannot be "
                             "recovered from an ε prediction there; use prediction_type="
                             "'v_prediction' (or 'sample')")
        x0 = self.clip_x0(self.pred_original_sample(model_output, t, sample))
        lam_t = half_log_snr(ab_t)

        history = None
        if state is not None:
            last = state.get("last")
            if last is not None and last["to"] == t:
                history = last
                if history["x0"].shape != x0.shape:
                    raise ValueError(f"the state holds a data prediction of shape "
                                     f"{tuple(history['x0'].shape)}, this step's is "
                                     f"{tuple(x0.shape)}: use one new_state() per run")
            state["last"] = {"from": t, "to": prev, "lambda": lam_t, "x0": x0}

        alpha_t, sigma_t = math.sqrt(ab_t), math.sqrt(1.0 - ab_t)
        alpha_p, sigma_p = math.sqrt(ab_prev), math.sqrt(1.0 - ab_prev)
        exp_neg_h = alpha_t * sigma_p / (sigma_t * alpha_p)  # e^{−h} = e^{λ_t − λ_prev}
        c_sample = sigma_p / sigma_t
        c_x0 = alpha_p * (1.0 - exp_neg_h)  # −α_prev·(e^{−h} − 1)

        if self._second_order(history, prev, sigma_p):
            h = half_log_snr(ab_prev) - lam_t
            half_inv_r = h / (2.0 * (lam_t - history["lambda"]))  # 1/(2r); 0 when λ' = −∞
            d = (1.0 + half_inv_r) * x0 - half_inv_r * history["x0"]
            return c_sample * sample + c_x0 * d
        return c_sample * sample + c_x0 * x0

    def _second_order(self, history: dict | None, prev: int, sigma_prev: float) -> bool:
        """Whether this step uses the multistep (2M) update (see the module docstring)."""
        cfg = self.config
        if history is None or cfg.solver_order < 2 or sigma_prev == 0.0:
            return False
        if prev < 0 and cfg.lower_order_final:
            return self.num_inference_steps >= LOWER_ORDER_FINAL_BELOW
        return True
