"""What every preference objective (dpo, ipo, kto, ranking-dpo …) does around its loss.

:class:`PreferenceTraining` is the :class:`~gaf.interfaces.PreferenceObjective` the DPO
family shares (it subclasses that core contract); a concrete objective only says which *units* it trains on (pairs, rankings or
labelled completions) and how it scores them. A run goes through four stages:

1. **SFT policy**, dropout off and a frozen reference ``π_ref``: the alignment base
   (:mod:`gaf.plugins.alignment.base`).
2. **Preference data**: the task's, or completions sampled from the SFT policy and
   labelled with the task's reward (:mod:`.data`).
3. **Training.** The reference log-probs of every response are computed once, before
   training (no reference forward per step). Logged per step with TRL's names:
   ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
   ``rewards/accuracies`` (strict ``>``), ``logps/chosen``, ``logps/rejected``,
   ``entropy`` (mean entropy of the policy's next-token distribution over the
   batch's completion tokens), and throughput. ``rewards/*`` are each objective's
   own implicit reward (:meth:`PreferenceTraining.implicit_reward`).
4. **Evaluation** on the held-out split (``eval_split``): ``eval_samples``
   completions per prompt from the policy and from the reference with the run's
   sampler (default ``top-p``, p = 0.9, which also draws the training samples),
   judged by the task's true reward: ``win_rate``, ``mean_reward``,
   ``reference_mean_reward`` and the sequence ``kl`` (:mod:`gaf.plugins.alignment.evaluation`).
   With held-out preference data, ``eval_accuracy`` is the fraction of held-out
   pairs that the objective's own implicit reward orders correctly (``β·log π/π_ref``
   for dpo, ``β·mean log π`` for the reference-free simpo and orpo).
"""

from __future__ import annotations

import abc
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.interfaces import PreferenceObjective, SequenceLogProbs
from gaf.plugins.alignment.base import eval_samples_option
from gaf.plugins.alignment.groups import accepts_option, fitting
from gaf.runs import RunContext

from .data import PreferenceData, PreferenceDataConfig
from .units import ScoredBatch

__all__ = ["PreferenceConfig", "PreferenceTraining"]


@attrs.define
class PreferenceConfig(PreferenceDataConfig):
    """Options shared by the preference objectives (the ``[objective]`` section)."""

    beta: float = option(1.0, "β: strength of the KL constraint / implicit-reward scale", gt=0)
    eval_samples: int = eval_samples_option()


class PreferenceTraining(PreferenceData, PreferenceObjective):
    """The shared pipeline (module docstring); subclasses define units and their loss.

    It subclasses the core contract :class:`gaf.interfaces.PreferenceObjective` (``beta``,
    ``reference_free``, :meth:`implicit_reward`, :meth:`batch_loss`): the contract is
    the core's, this class is one way to meet it, for language-model policies.

    A subclass sets ``unit`` (what ``batch_size`` counts: ``"pairs"``, ``"rankings"``,
    ``"completions"``) and implements :meth:`units_of`, :meth:`responses_of` and
    :meth:`batch_loss`.
    """

    Config: type = PreferenceConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "top-p"}
    # Tuned on the sentiment task (docs/results.md says on which split).
    train_defaults = {"steps": 1600, "batch_size": 32, "lr": 2e-4, "warmup_steps": 20,
                      "log_every": 10, "max_grad_norm": 10.0}
    reference_free = False
    plot_keys = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen",
                 "rewards/rejected", "logps/chosen", "logps/rejected", "entropy", "grad_norm")

    @property
    def beta(self) -> float:
        return self.config.beta

    @abc.abstractmethod
    def batch_loss(self, batch: ScoredBatch, policy: SequenceLogProbs,
                   ref: SequenceLogProbs | None) -> tuple[Tensor, dict[str, float]]:
        """``(mean loss, metrics)`` of a batch, from the policy's and the cached
        reference's log-probs of ``batch``'s completions (rows as ``batch.local``)."""

    def implicit_reward(self, policy: SequenceLogProbs, ref: SequenceLogProbs | None) -> Tensor:
        """The reward the objective trains implicitly: ``β·(log π − log π_ref)``;
        reference-free objectives use ``β·mean log π``. Logged as ``rewards/*`` and used
        to rank held-out pairs (``eval_accuracy``)."""
        if ref is None:
            return self.beta * policy.mean
        return self.beta * (policy.sum - ref.sum)

    # -------------------------------------------------------------------- setup

    def setup(self, ctx: RunContext) -> None:
        self.setup_policy(ctx)
        self._entropy = accepts_option(self.policy, "completion_logprobs", "entropy")
        self.setup_data(ctx)
        self.ref_logps = None if self.reference_free else self.score(self.reference, self.groups)

    def modules(self) -> dict[str, Any]:
        return {"policy": self.policy}

    # ----------------------------------------------------------------- training

    def loss(self, batch: tuple[ScoredBatch, Any]) -> tuple[Tensor, dict[str, float]]:
        scored, lm_batch = batch
        logprobs = (self.policy.completion_logprobs(lm_batch, entropy=True) if self._entropy
                    else self.policy.completion_logprobs(lm_batch))
        policy = logprobs.sequence()
        ref = None
        if self.ref_logps is not None:
            cached = self.ref_logps[torch.tensor(scored.response_ids)].to(policy.sum.device)
            ref = SequenceLogProbs(cached[:, 0], cached[:, 1])
        loss, metrics = self.batch_loss(scored, policy, ref)
        if logprobs.entropy is not None:
            metrics["entropy"] = logprobs.mean_entropy()
        return loss, metrics

    def pair_metrics(self, chosen: SequenceLogProbs, rejected: SequenceLogProbs,
                     ref_chosen: SequenceLogProbs | None,
                     ref_rejected: SequenceLogProbs | None) -> dict[str, float]:
        """TRL's metric names, averaged over the pairs."""
        with torch.no_grad():
            rc = self.implicit_reward(chosen, ref_chosen)
            rr = self.implicit_reward(rejected, ref_rejected)
            return {"rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
                    "rewards/margins": float((rc - rr).mean()),
                    "rewards/accuracies": float((rc > rr).float().mean()),
                    "logps/chosen": float(chosen.sum.mean()),
                    "logps/rejected": float(rejected.sum.mean())}

    # --------------------------------------------------------------- evaluation

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        out: dict[str, float] = dict(self.data_stats)
        if self.skipped:
            out["data_skipped"] = float(self.skipped)
        out.update(self.heldout_accuracy())
        out.update(self.evaluate_policy(ctx))
        return out

    def heldout_accuracy(self) -> dict[str, float]:
        """``eval_accuracy``: the fraction of the held-out split's preference pairs that
        :meth:`implicit_reward` orders correctly (strict ``>``), and ``eval_pairs``."""
        groups = self.heldout_groups()
        if groups:
            groups, _ = fitting(groups, self.policy.tokenizer, self.policy.context_length)
        if not groups:
            return {}
        scores = self.score(self.policy, groups)
        policy = SequenceLogProbs(scores[:, 0], scores[:, 1])
        ref = None
        if not self.reference_free:
            ref_scores = self.score(self.reference, groups)
            ref = SequenceLogProbs(ref_scores[:, 0], ref_scores[:, 1])
        reward = self.implicit_reward(policy, ref)
        correct, total, offset = 0, 0, 0
        for g in groups:
            for i, j in g.pairs:
                correct += int(reward[offset + i] > reward[offset + j])
                total += 1
            offset += len(g.responses)
        return {"eval_accuracy": correct / total, "eval_pairs": float(total)}
