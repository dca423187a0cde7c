"""The DPO family: pairwise losses, KTO on labelled completions, and ranking DPO.

Each class is a registered ``objective``; all of them run the shared pipeline of
:class:`~gaf.plugins.preference.training.PreferenceTraining` (SFT policy, preference
data, cached reference log-probs, evaluation) and differ only in the loss, which
comes from :mod:`gaf.plugins.preference.losses`. Notation: ``h = Δw − Δl`` with
``Δ = log π(y|x) − log π_ref(y|x)`` summed over completion tokens.

============  =====================================================  ==============
name          per-unit loss                                          trains on
============  =====================================================  ==============
dpo           ``−log σ(β h)``                                        pairs
cdpo          ``−(1−ε) log σ(β h) − ε log σ(−β h)``                  pairs
robust        ``[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1−2ε)``       pairs
ipo           ``(h̄ − 1/(2β))²``, per-token-mean log-ratios           pairs
hinge         ``relu(1 − β h)``                                      pairs
simpo         ``−log σ(β·mean log π(yw) − β·mean log π(yl) − γ)``    pairs, no π_ref
orpo          ``NLL(yw) − β·log σ(log odds(yw) − log odds(yl))``     pairs, no π_ref
kto           ``λD(1−σ(β(r−z0)))`` / ``λU(1−σ(β(z0−r)))``            completions
ranking-dpo   Plackett–Luce NLL of a full ranking y1 ≻ … ≻ yK         rankings
============  =====================================================  ==============

Pairwise losses take ``rpo_alpha``: α times the token-mean NLL of the chosen
completions is added (RPO, Pang et al. 2024; ``rpo_alpha`` of TRL < 1.0), which keeps
the chosen log-probs from falling.

Each objective logs, and ranks held-out pairs by, its own implicit reward
(:meth:`~gaf.plugins.preference.training.PreferenceTraining.implicit_reward`):
``β·Σ log π/π_ref`` for the sigmoid, smoothed, hinge, KTO and ranking losses, the
per-token mean of the log-ratio times β for ipo (the quantity its loss squares, as
TRL logs it), ``β·mean log π`` for the reference-free simpo and orpo.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.interfaces import PreferenceGroup, SequenceLogProbs

from . import losses
from .training import PreferenceConfig, PreferenceTraining
from .units import ScoredBatch

__all__ = ["DPO", "CDPO", "RobustDPO", "IPO", "Hinge", "SimPO", "ORPO", "KTO", "RankingDPO",
           "PairwiseConfig", "PairwiseObjective"]


# --------------------------------------------------------------------- pairwise


@attrs.define
class PairwiseConfig(PreferenceConfig):
    """Options of the losses on pairs."""

    rpo_alpha: float = option(0.0, "weight α of an NLL term on the chosen completions "
                                   "(RPO; rpo_alpha of TRL < 1.0; 0 = off)", ge=0)


class PairwiseObjective(PreferenceTraining):
    """A loss on preference pairs (the :class:`~gaf.interfaces.PreferenceObjective`
    contract); subclasses implement :meth:`pair_loss`."""

    Config: type = PairwiseConfig
    unit = "pairs"

    @abc.abstractmethod
    def pair_loss(self, chosen: SequenceLogProbs, rejected: SequenceLogProbs,
                  ref_chosen: SequenceLogProbs | None,
                  ref_rejected: SequenceLogProbs | None) -> Tensor:
        """The per-pair loss ``(B,)`` (the :class:`~gaf.interfaces.PreferenceObjective`
        contract); the reference arguments are ``None`` when ``reference_free``."""

    def batch_loss(self, batch: ScoredBatch, policy: SequenceLogProbs,
                   ref: SequenceLogProbs | None) -> tuple[Tensor, dict[str, float]]:
        device = policy.sum.device
        chosen_rows = torch.tensor([batch.local[(g, i)] for g, (i, _) in batch.units],
                                   device=device)
        rejected_rows = torch.tensor([batch.local[(g, j)] for g, (_, j) in batch.units],
                                     device=device)
        chosen, rejected = policy.select(chosen_rows), policy.select(rejected_rows)
        ref_c = ref.select(chosen_rows) if ref is not None else None
        ref_r = ref.select(rejected_rows) if ref is not None else None
        loss = self.pair_loss(chosen, rejected, ref_c, ref_r).mean()
        metrics = self.pair_metrics(chosen, rejected, ref_c, ref_r)
        if self.config.rpo_alpha:
            # token-mean NLL of the chosen (over all ranks' tokens when distributed)
            nll = self.ctx.world.mean(-chosen.sum.sum(), chosen.count.sum())
            loss = loss + self.config.rpo_alpha * nll
            metrics["nll_loss"] = float(nll.detach())
        return loss, metrics


def _margin(chosen: SequenceLogProbs, rejected: SequenceLogProbs,
            ref_chosen: SequenceLogProbs | None, ref_rejected: SequenceLogProbs | None) -> Tensor:
    return losses.margin(chosen.sum, rejected.sum,
                         None if ref_chosen is None else ref_chosen.sum,
                         None if ref_rejected is None else ref_rejected.sum)


class DPO(PairwiseObjective):
    """Direct Preference Optimization (Rafailov et al. 2023), the sigmoid loss
    ``−log σ(β h)``. At step 0 (``π = π_ref``) the loss is ``ln 2`` and every
    implicit reward is 0.

    Like every objective of the family, a run fine-tunes the policy first (SFT
    sub-run in ``RUN_DIR/sft/``, skipped with ``--init DIR``), samples 4 completions
    per training prompt and labels their pairs with the task's reward (or reads
    ``--data``), trains against the frozen SFT policy with cached reference
    log-probs, and reports ``win_rate``, ``mean_reward``, ``reference_mean_reward``
    and ``kl`` on held-out prompts (:mod:`gaf.plugins.preference.training`)."""

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.dpo_loss(_margin(chosen, rejected, ref_chosen, ref_rejected), self.beta)


@attrs.define
class SmoothedConfig(PairwiseConfig):
    """Options of ``cdpo`` and ``robust``."""

    label_smoothing: float = option(0.1, "ε: assumed probability that a preference label "
                                         "is flipped (0 gives plain dpo)", ge=0, lt=0.5)


class CDPO(PairwiseObjective):
    """Conservative DPO (label smoothing ε, Mitchell 2023):
    ``−(1−ε) log σ(β h) − ε log σ(−β h)``; ε = 0 is ``dpo``. TRL < 1.0 offered it as
    ``label_smoothing`` on the sigmoid loss."""

    Config = SmoothedConfig

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.cdpo_loss(_margin(chosen, rejected, ref_chosen, ref_rejected), self.beta,
                                self.config.label_smoothing)


class RobustDPO(PairwiseObjective):
    """Robust DPO (Chowdhury et al. 2024), unbiased under label noise ε:
    ``[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1−2ε)``."""

    Config = SmoothedConfig

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.robust_loss(_margin(chosen, rejected, ref_chosen, ref_rejected),
                                  self.beta, self.config.label_smoothing)


class IPO(PairwiseObjective):
    """Identity Preference Optimisation (Azar et al. 2023): ``(h̄ − 1/(2β))²`` with
    ``h̄`` built from per-token-mean log-probs (as TRL, confirmed with the authors).
    Its minimum is at ``h̄ = 1/(2β)``, so it never pushes margins to infinity. Its
    implicit reward (``rewards/*``, ``eval_accuracy``) is β times the per-token mean
    log-ratio, the quantity its loss squares."""

    def implicit_reward(self, policy, ref):
        return self.beta * (policy.mean - ref.mean)

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        h_mean = losses.margin(chosen.mean, rejected.mean, ref_chosen.mean, ref_rejected.mean)
        return losses.ipo_loss(h_mean, self.beta)


class Hinge(PairwiseObjective):
    """SLiC's hinge loss (Zhao et al. 2023): ``relu(1 − β h)``."""

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.hinge_loss(_margin(chosen, rejected, ref_chosen, ref_rejected), self.beta)


@attrs.define
class SimPOConfig(PairwiseConfig):
    """Options of ``simpo`` (defaults from the SimPO paper: β = 2, γ = 1)."""

    beta: float = option(2.0, "β: scale of the length-normalised reward", gt=0)
    gamma: float = option(1.0, "γ: target reward margin, absolute (TRL's simpo_gamma)")


class SimPO(PairwiseObjective):
    """SimPO (Meng et al. 2024), reference-free:
    ``−log σ(β·mean log π(yw) − β·mean log π(yl) − γ)``."""

    Config = SimPOConfig
    reference_free = True

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.simpo_loss(chosen.mean, rejected.mean, self.beta, self.config.gamma)


@attrs.define
class ORPOConfig(PairwiseConfig):
    """Options of ``orpo``; ``beta`` is the paper's λ (TRL also calls it beta)."""

    beta: float = option(0.1, "λ: weight of the odds-ratio term against the chosen NLL", gt=0)


class ORPO(PairwiseObjective):
    """ORPO (Hong et al. 2024), reference-free: the chosen completion's token-mean NLL
    plus ``−β·log σ(log odds(yw) − log odds(yl))``, odds from ``p = exp(mean log π)``."""

    Config = ORPOConfig
    reference_free = True

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected):
        return losses.orpo_loss(chosen.mean, rejected.mean, self.beta)


# --------------------------------------------------------------------- unpaired


@attrs.define
class KTOConfig(PreferenceConfig):
    """Options of ``kto``: λD and λU default to TRL's ``KTOConfig`` values; ``beta`` is
    the shared preference default (1.0), where TRL's ``KTOConfig`` has 0.1."""

    desirable_weight: float = option(1.0, "λD: weight of desirable completions")
    undesirable_weight: float = option(1.0, "λU: weight of undesirable completions")
    unpair: Literal["trl", "net"] = option(
        "trl", "paired data to labelled completions: 'trl' (the chosen of every pair is "
               "desirable, the rejected undesirable, as TRL's unpair_preference_dataset) or "
               "'net' (a response is desirable when it wins more of its pairs than it loses)")


class KTO(PreferenceTraining):
    """Kahneman–Tversky Optimisation (Ethayarajh et al. 2024) on single completions
    labelled desirable or undesirable: ``λD(1 − σ(β(r − z0)))`` for desirable,
    ``λU(1 − σ(β(z0 − r)))`` for undesirable, ``r = log π/π_ref`` and ``z0`` the
    detached batch estimate of the KL, clamped at 0. Labelled data is used as
    labelled. Paired data is unpaired as TRL's ``unpair_preference_dataset`` does it
    (``unpair = "trl"``): each pair gives its chosen response as a desirable example
    and its rejected one as an undesirable example, so in a group of K > 2 ranked
    responses a middle one appears as both. ``unpair = "net"`` instead labels each
    response once, desirable when it wins more of its pairs than it loses (unused on a
    draw). ``batch_size`` counts completions."""

    Config = KTOConfig
    unit = "completions"

    def units_of(self, group: PreferenceGroup) -> list[Any]:
        if group.labels is not None or self.config.unpair == "net":
            return [(i, flag) for i, flag in enumerate(group.desirable()) if flag is not None]
        return [unit for i, j in group.pairs for unit in ((i, True), (j, False))]

    def responses_of(self, unit: Any) -> tuple[int]:
        return (unit[0],)

    def batch_loss(self, batch, policy, ref):
        device = policy.sum.device
        rows = torch.tensor([batch.local[(g, u[0])] for g, u in batch.units], device=device)
        good = torch.tensor([u[1] for _, u in batch.units], device=device)
        logp, ref_logp = policy.sum[rows], ref.sum[rows]
        r = logp - ref_logp
        world = self.ctx.world
        z0 = (losses.kto_reference_point(r) if not world.enabled  # else over all ranks
              else (world.sum(r.detach().sum()) / world.sum(float(r.numel()))).clamp_min(0))
        cfg = self.config
        per = losses.kto_loss(r, good, z0, self.beta, cfg.desirable_weight,
                              cfg.undesirable_weight)
        metrics = {"kl": float(z0)}
        with torch.no_grad():
            for name, sel in (("chosen", good), ("rejected", ~good)):
                if sel.any():
                    metrics[f"rewards/{name}"] = float(self.beta * r[sel].mean())
                    metrics[f"logps/{name}"] = float(logp[sel].mean())
            if good.any() and (~good).any():
                metrics["rewards/margins"] = (metrics["rewards/chosen"]
                                              - metrics["rewards/rejected"])
        return per.mean(), metrics


# ---------------------------------------------------------------------- ranking


class RankingDPO(PreferenceTraining):
    """DPO on full rankings ``y1 ≻ y2 ≻ … ≻ yK`` through the Plackett–Luce model (DPO
    paper, appendix A.3): the loss of a ranking is
    ``−Σ_k [β h_k − log Σ_{m≥k} exp(β h_m)]``, ``h_k = log π(y_k)/π_ref(y_k)``; with
    K = 2 it is exactly ``dpo``. Every response of a prompt is scored once, however
    many pairs the ranking implies. ``batch_size`` counts rankings; groups that are not
    full rankings (ties under ``labels = "order"``, ``bradley-terry`` labels) are not
    used."""

    unit = "rankings"
    no_units_hint = ("; ranking-dpo needs full rankings: set objective.labels to 'order' or "
                     "'plackett-luce', or pass data with {prompt, responses, ranking} or "
                     "{prompt, chosen, rejected} records")
    train_defaults = {**PreferenceTraining.train_defaults, "batch_size": 8}

    def units_of(self, group: PreferenceGroup) -> list[Any]:
        n = len(group.responses)
        return [tuple(range(n))] if group.ranked and n >= 2 else []

    def batch_loss(self, batch, policy, ref):
        device = policy.sum.device
        K = max(len(u) for _, u in batch.units)
        rows = torch.zeros(len(batch.units), K, dtype=torch.long, device=device)
        mask = torch.zeros(len(batch.units), K, dtype=torch.bool, device=device)
        for b, (g, unit) in enumerate(batch.units):
            rows[b, :len(unit)] = torch.tensor([batch.local[(g, i)] for i in unit])
            mask[b, :len(unit)] = True
        h = policy.sum[rows] - ref.sum[rows]
        per = losses.plackett_luce_loss(h, self.beta, mask)
        # TRL-style metrics over every pair the rankings imply
        first, second = [], []
        for b, (_, unit) in enumerate(batch.units):
            for i in range(len(unit)):
                for j in range(i + 1, len(unit)):
                    first.append(int(rows[b, i]))
                    second.append(int(rows[b, j]))
        c = torch.tensor(first, device=device)
        r = torch.tensor(second, device=device)
        return per.mean(), self.pair_metrics(policy.select(c), policy.select(r), ref.select(c),
                                             ref.select(r))
