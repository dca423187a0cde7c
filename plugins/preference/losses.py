r"""Per-example losses of Direct Preference Optimization (DPO) and its relatives.

Every function here is a pure function of float tensors: it returns one loss per
example (or per group, for Plackett–Luce) with **no reduction**, so the caller picks
the batch mean, a weighted sum, a per-token normalisation, and so on. All of them work
in float32 and float64, with autograd, and stay finite (with finite gradients) for
log-probability inputs as extreme as ±1e4: they are written with ``F.logsigmoid``,
``F.softplus``, ``logsumexp``/``logcumsumexp`` and ``expm1`` instead of the naive
``log(sigmoid(.))``, ``log(1 + exp(.))`` or ``log(1 - exp(.))``.

Notation
--------
For a prompt ``x`` and a completion ``y``:

* ``log π(y|x)`` is the **sum** of the completion tokens' log-probabilities under the
  policy ``πθ`` (or the frozen reference ``πref``); the prompt is not scored.
* ``yw`` is the chosen (preferred, "winning") completion and ``yl`` the rejected one.
* ``Δw = log πθ(yw|x) − log πref(yw|x)`` and ``Δl = log πθ(yl|x) − log πref(yl|x)``
  are the policy/reference log-ratios, and ``h = Δw − Δl`` is the *margin*
  (:func:`margin`).
* ``σ(z) = 1 / (1 + e^(−z))`` is the logistic function, so ``−log σ(z) = softplus(−z)``.
* ``β · log πθ(y|x)/πref(y|x)`` is the *implicit reward* of DPO (Rafailov et al. 2023),
  so ``β h`` is the implicit-reward difference of the pair.
* Length-normalised ("mean") log-probabilities, where a function asks for them, are
  the sum above divided by the number of completion tokens.

References
----------
* DPO — Rafailov et al., "Direct Preference Optimization: Your Language Model is
  Secretly a Reward Model", NeurIPS 2023 (arXiv:2305.18290).
* cDPO — Mitchell, "A note on DPO with noisy preferences & relationship to IPO", 2023.
* Robust DPO — Chowdhury et al., "Provably Robust DPO: Aligning Language Models with
  Noisy Feedback", ICML 2024 (arXiv:2403.00409).
* IPO — Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", AISTATS 2024 (arXiv:2310.12036).
* SLiC — Zhao et al., "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
  2023 (arXiv:2305.10425).
* SimPO — Meng et al., "SimPO: Simple Preference Optimization with a Reference-Free
  Reward", NeurIPS 2024 (arXiv:2405.14734).
* ORPO — Hong et al., "ORPO: Monolithic Preference Optimization without Reference
  Model", EMNLP 2024 (arXiv:2403.07691).
* KTO — Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic Optimization",
  ICML 2024 (arXiv:2402.01306).
* "TRL" refers to Hugging Face TRL's ``DPOTrainer`` (``loss_type`` ``"sigmoid"``,
  ``"robust"``, ``"ipo"``, ``"hinge"``), ``CPOTrainer`` (SimPO), ``ORPOTrainer`` and
  ``KTOTrainer``, whose semantics these functions follow where noted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "margin",
    "dpo_loss",
    "cdpo_loss",
    "robust_loss",
    "ipo_loss",
    "hinge_loss",
    "simpo_loss",
    "log_odds",
    "orpo_loss",
    "kto_loss",
    "kto_reference_point",
    "plackett_luce_loss",
]

# Upper bound of a mean log-probability in :func:`log_odds`: p = 1 has infinite odds.
LOG_ODDS_MAX_LOGP = -1e-6


def margin(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor | None = None,
           ref_rejected: Tensor | None = None) -> Tensor:
    r"""The DPO margin ``h = (chosen − ref_chosen) − (rejected − ref_rejected)``.

    ``chosen``/``rejected`` are the policy's summed log-probabilities
    ``log πθ(yw|x)``/``log πθ(yl|x)``, and ``ref_chosen``/``ref_rejected`` the
    reference model's, all of shape ``(B,)``. A reference left as ``None`` counts as
    0 (the reference-free variant, i.e. a uniform reference), so
    ``margin(chosen, rejected) = chosen − rejected``.

    Swapping chosen and rejected (together with their references) negates ``h``
    exactly. ``h`` is the argument of :func:`dpo_loss`, :func:`cdpo_loss`,
    :func:`robust_loss` and :func:`hinge_loss`; DPO (Rafailov et al. 2023, Eq. 7)
    writes it as ``log πθ(yw|x)/πref(yw|x) − log πθ(yl|x)/πref(yl|x)``.
    """
    delta_w = chosen if ref_chosen is None else chosen - ref_chosen
    delta_l = rejected if ref_rejected is None else rejected - ref_rejected
    return delta_w - delta_l


def dpo_loss(h: Tensor, beta: float | Tensor) -> Tensor:
    r"""DPO loss ``−log σ(β h)`` per pair (Rafailov et al. 2023, Eq. 7; TRL ``"sigmoid"``).

    ``h`` is the margin (:func:`margin`) and ``β > 0`` the inverse temperature of the
    implicit reward (TRL default 0.1). At ``h = 0`` the loss is ``ln 2``. Computed as
    ``−logsigmoid(β h)``, which is finite for any finite ``β h``.
    """
    return -F.logsigmoid(beta * h)


def cdpo_loss(h: Tensor, beta: float | Tensor, label_smoothing: float | Tensor) -> Tensor:
    r"""Conservative DPO: ``−(1−ε) log σ(β h) − ε log σ(−β h)``.

    The DPO loss with the preference label flipped with probability
    ``ε = label_smoothing`` (Mitchell 2023, "A note on DPO with noisy preferences");
    this is TRL's ``loss_type="sigmoid"`` with ``label_smoothing = ε``. With ``ε = 0``
    it is :func:`dpo_loss`. Unlike plain DPO its minimiser is a finite margin
    (``β h = log((1−ε)/ε)`` for ``0 < ε < 0.5``).
    """
    z = beta * h
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def robust_loss(h: Tensor, beta: float | Tensor, label_smoothing: float) -> Tensor:
    r"""Robust DPO: ``[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε)``.

    Chowdhury et al. 2024 ("Provably Robust DPO"): an unbiased estimate of the
    clean DPO loss when each preference label was flipped independently with known
    probability ``ε = label_smoothing``; this is TRL's ``loss_type="robust"``. With
    ``ε = 0`` it is :func:`dpo_loss`. For ``ε > 0`` the loss is unbounded below as
    ``β h → +∞`` (it tends to ``−ε β h / (1 − 2ε)``); that is the paper's estimator,
    not a numerical artefact.

    Raises:
        ValueError: if ``ε < 0`` or ``ε ≥ 0.5`` (the estimator divides by ``1 − 2ε``).
    """
    eps = float(label_smoothing)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust_loss needs 0 <= label_smoothing < 0.5, got {eps}")
    z = beta * h
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def ipo_loss(h_mean: Tensor, beta: float | Tensor) -> Tensor:
    r"""IPO loss ``(h̄ − 1/(2β))²`` (Azar et al. 2024; TRL ``loss_type="ipo"``).

    ``h_mean`` must be the margin built from **per-token averaged** log-ratios::

        h̄ = (log πθ(yw|x) − log πref(yw|x)) / |yw|
             − (log πθ(yl|x) − log πref(yl|x)) / |yl|

    i.e. :func:`margin` applied to length-normalised log-probabilities. The paper's
    formula uses sequence log-ratios; TRL averages them per token for IPO, a choice its
    maintainers confirmed with the IPO authors, and this function follows TRL: the
    caller passes the per-token-mean margin. ``β > 0`` acts as a regularisation
    strength: the loss is minimal (0) at ``h̄ = 1/(2β)``, so a smaller ``β`` targets a
    larger margin.
    """
    return (h_mean - 1 / (2 * beta)) ** 2


def hinge_loss(h: Tensor, beta: float | Tensor) -> Tensor:
    r"""SLiC hinge loss ``max(0, 1 − β h)`` (Zhao et al. 2023; TRL ``loss_type="hinge"``).

    The calibration loss of SLiC-HF with the DPO margin ``h`` in place of the sequence
    log-likelihood difference; ``1/β`` is the margin the hinge asks for.
    """
    return F.relu(1 - beta * h)


def simpo_loss(mean_chosen: Tensor, mean_rejected: Tensor, beta: float | Tensor,
               gamma: float | Tensor) -> Tensor:
    r"""SimPO loss ``−log σ(β·mean_w − β·mean_l − γ)`` (Meng et al. 2024).

    ``mean_chosen``/``mean_rejected`` are the policy's **length-normalised**
    log-probabilities ``log πθ(y|x) / |y|`` (no reference model), ``β`` scales the
    reward (the paper uses 2–10) and ``γ`` is the target reward margin.

    Here ``γ`` is the **absolute** margin, as in the paper's formula. Implementations
    often configure it relative to ``β`` instead: the SimPO authors' code takes
    ``gamma_beta_ratio`` and computes ``β·(mean_w − mean_l − gamma_beta_ratio)``, so
    with such settings pass ``gamma = gamma_beta_ratio · beta``. (TRL's ``CPOTrainer``
    with ``loss_type="simpo"`` computes ``β·(mean_w − mean_l − simpo_gamma/β)``, i.e.
    its ``simpo_gamma`` already is the absolute ``γ``.)
    """
    return -F.logsigmoid(beta * mean_chosen - beta * mean_rejected - gamma)


def log_odds(mean_logp: Tensor) -> Tensor:
    r"""Log-odds ``log(p / (1 − p))`` of ``p = exp(mean_logp)`` (ORPO, Hong et al. 2024).

    ``mean_logp`` is a length-normalised log-probability (``≤ 0``). Computed stably as
    ``mean_logp − log(−expm1(mean_logp))``: ``−expm1(m) = 1 − e^m`` without the
    cancellation of ``1 − exp(m)`` near ``m = 0``.

    **Clamp:** ``mean_logp`` is first clamped to at most ``−1e-6`` (``p = 1`` has
    infinite odds, and ``m > 0`` is not a probability), so the result is at most
    ``≈ 13.8`` and inputs at or above ``−1e-6`` get zero gradient through this function.
    """
    m = mean_logp.clamp(max=LOG_ODDS_MAX_LOGP)
    return m - torch.log(-torch.expm1(m))


def orpo_loss(mean_chosen: Tensor, mean_rejected: Tensor, lam: float | Tensor) -> Tensor:
    r"""ORPO loss ``NLL(yw) − λ · log σ(log_odds(yw) − log_odds(yl))`` (Hong et al. 2024).

    ``mean_chosen``/``mean_rejected`` are the policy's length-normalised log-probs of
    the chosen and rejected completions (no reference model); ``NLL(yw) = −mean_chosen``
    is the token-mean negative log-likelihood of the chosen completion, and the odds
    come from :func:`log_odds` (with its clamp). ``λ`` weighs the odds-ratio term; TRL's
    ``ORPOTrainer`` calls it ``beta`` and defaults it to 0.1.

    Note: TRL's NLL term is a token mean over the whole batch's chosen completions,
    whereas this per-example form averages each completion on its own; the two agree
    when the chosen completions have equal lengths. TRL 1.16's ``ORPOTrainer``
    (``trl.experimental.orpo``) also counts the prompt's tokens in its NLL (its labels are
    every attended token), so its loss differs from this one on the same weights and
    batch (``benchmarks/trl_preference_peer.py`` runs it).
    """
    ratio = log_odds(mean_chosen) - log_odds(mean_rejected)
    return -mean_chosen - lam * F.logsigmoid(ratio)


def kto_loss(r: Tensor, desirable: Tensor, z0: Tensor, beta: float | Tensor,
             lambda_d: float | Tensor, lambda_u: float | Tensor) -> Tensor:
    r"""KTO loss per example (Ethayarajh et al. 2024; TRL ``KTOTrainer``).

    * desirable ``y``:   ``λD · (1 − σ(β (r − z0)))``
    * undesirable ``y``: ``λU · (1 − σ(β (z0 − r)))``

    ``r`` (``(B,)``) is the log-ratio ``log πθ(y|x) − log πref(y|x)`` of summed
    log-probabilities, ``desirable`` (``(B,)`` bool) labels each example, and ``z0`` is
    the reference point, a scalar tensor. The caller passes a **detached** batch KL
    estimate clamped at ≥ 0 (see :func:`kto_reference_point`); gradients would flow
    through ``z0`` if it were not detached. ``λD``/``λU`` (TRL's ``desirable_weight`` /
    ``undesirable_weight``, default 1) rebalance unequal numbers of desirable and
    undesirable examples. ``1 − σ(z)`` is computed as ``σ(−z)``.
    """
    desirable = desirable.to(torch.bool)
    loss_d = lambda_d * torch.sigmoid(beta * (z0 - r))
    loss_u = lambda_u * torch.sigmoid(beta * (r - z0))
    return torch.where(desirable, loss_d, loss_u)


def kto_reference_point(r: Tensor) -> Tensor:
    r"""KTO reference point ``z0 = max(0, mean(r))``, detached.

    The paper's ``z0`` is ``KL(πθ(y'|x) ‖ πref(y'|x))``; TRL estimates it from
    *mismatched* pairs (each prompt with another example's completion, an extra forward
    pass of both models) and clamps it at 0. This is the cheaper estimate from the
    batch's own log-ratios ``r = log πθ(y|x) − log πref(y|x)``: their mean, detached
    (no gradient flows through the reference point, as in TRL) and clamped at 0.
    """
    return r.mean().detach().clamp_min(0)


def plackett_luce_loss(h: Tensor, beta: float | Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Plackett–Luce ranking loss under the DPO implicit reward, one value per group.

    ``h`` (``(G, K)``) holds ``log πθ(y_k|x) − log πref(y_k|x)`` for each group's
    responses, ranked best first (``y_1 ≻ y_2 ≻ … ≻ y_K``). The loss of a group is the
    negative log-likelihood of its ranking under a Plackett–Luce model whose scores are
    the implicit rewards ``β h_k`` (Rafailov et al. 2023, Appendix A.3, Eq. 18)::

        −Σ_{k=1}^{K−1} [ β h_k − log Σ_{m ≥ k} exp(β h_m) ]

    With ``K = 2`` it equals ``dpo_loss(h_1 − h_2, beta)``. It is invariant to adding a
    constant to all ``h`` of a group.

    ``mask`` (``(G, K)`` bool, optional) marks valid responses; in each row they must
    form a prefix, so groups can have different sizes ``K``. Invalid entries are ignored
    (their values do not matter and get zero gradient): they are set to ``−inf`` before
    the reversed cumulative ``logcumsumexp`` over the ``K`` axis, and the terms of
    invalid positions and of each row's last valid position (which is always 0) are
    dropped.

    Raises:
        ValueError: if ``h`` is not 2-D, ``mask`` has another shape, a row's valid
            entries are not a prefix, or a row has fewer than 2 valid entries.
    """
    if h.dim() != 2:
        raise ValueError(f"plackett_luce_loss needs h of shape (G, K), got {tuple(h.shape)}")
    if mask is None:
        mask = torch.ones(h.shape, dtype=torch.bool, device=h.device)
    else:
        if mask.shape != h.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from h {tuple(h.shape)}")
        mask = mask.to(device=h.device, dtype=torch.bool)
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("the valid entries of each mask row must be a prefix")
    if (mask.sum(dim=1) < 2).any():
        raise ValueError("each group needs at least 2 valid responses")
    s = beta * h
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
    # lse[g, k] = log Σ_{m ≥ k, valid} exp(s[g, m]); −inf at invalid positions.
    lse = torch.where(mask, s, neg_inf).flip(-1).logcumsumexp(-1).flip(-1)
    # Keep valid positions that have a valid successor (i.e. not the last valid one).
    keep = torch.zeros_like(mask)
    keep[:, :-1] = mask[:, 1:]
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    terms = torch.where(keep, s - torch.where(keep, lse, zero), zero)
    return -terms.sum(dim=-1)
