"""``reinforce`` and ``rloo``: on-policy policy gradient with a KL penalty.

Each step takes ``batch_size`` training prompts, samples ``samples_per_prompt`` (k)
completions of each from the current policy with the run's sampler (``temperature``
at 1 by default; at another temperature every log-probability below is taken under
``softmax(logits / T)``, the distribution sampled), and scores them:

    R(x, y) = r(x, y) − β · Σ_t [log π(y_t | …) − log π_ref(y_t | …)]

with ``r`` the run's reward (the task's ground truth by default, ``--reward RUN_DIR``
for a learned reward model) and the sequence KL to the frozen SFT policy estimated by
k1 on the sample. The loss is the likelihood-ratio (REINFORCE) estimator

    L = −1/N Σ_i A_i · log π(y_i | x_i),   A_i = R_i − b_i

* ``reinforce``: ``b`` is the mean of R over the step's batch (a baseline that does
  not depend on the sample, up to its own 1/N share);
* ``rloo``: ``b_i`` is the mean of the other k − 1 samples of the same prompt
  (REINFORCE leave-one-out, Ahmadian et al. 2024): unbiased, no value network.

Logged (TRL's names): ``objective/kl``, ``objective/scores``, ``objective/rlhf_reward``,
``objective/advantage_std``. The SFT stage, the reference copy, the rollouts and the
evaluation are those of :mod:`gaf.plugins.rlhf.on_policy`.
"""

from __future__ import annotations

import abc
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig

from .advantages import rloo_advantages
from .on_policy import OnPolicy, OnPolicyConfig

__all__ = ["PolicyGradientConfig", "Reinforce", "RLOO"]


@attrs.define
class PolicyGradientConfig(OnPolicyConfig):
    """Options of ``reinforce`` and ``rloo``."""

    samples_per_prompt: int = option(4, "completions sampled per training prompt (k); each "
                                        "step trains on batch_size × k of them", ge=1)


class PolicyGradient(OnPolicy):
    """Shared rollout, scoring and loss of ``reinforce`` and ``rloo`` (module docstring)."""

    Config = PolicyGradientConfig
    unit = "prompts"
    train_defaults = {"steps": 200, "batch_size": 16, "lr": 1e-4, "warmup_steps": 10,
                      "log_every": 10, "max_grad_norm": 1.0}
    plot_keys = ("loss", "objective/scores", "objective/rlhf_reward", "objective/kl",
                 "objective/advantage_std", "grad_norm")

    @abc.abstractmethod
    def baseline(self, rewards: Tensor) -> Tensor:
        """``(P, k)`` rewards → ``(P, k)`` advantages."""

    def train_batch(self, index: int) -> dict[str, Any]:
        cfg, world = self.config, self.ctx.world
        start, count = world.shard(index * self.batch_size, self.batch_size)
        prompts = [self.train_prompts[i] for i in self.order.slice(start, count)]
        k = cfg.samples_per_prompt
        flat = [p for p in prompts for _ in range(k)]
        rollout = self.sample(flat, index)
        was_training = self.policy.training
        self.policy.eval()
        with torch.no_grad():
            logp = self.logprobs(self.policy, rollout.batch).sequence().sum
            ref_logp = self.logprobs(self.reference, rollout.batch).sequence().sum
        self.policy.train(was_training)
        scores = self.rewards_of(flat, rollout, logp.device)
        kl = (logp - ref_logp).float()
        total = scores - cfg.beta * kl
        advantages = self.baseline(total.view(len(prompts), k)).flatten()
        return {"batch": rollout.batch, "advantages": advantages, "scores": scores, "kl": kl,
                "metrics": {"objective/kl": float(kl.mean()),
                            "objective/scores": float(scores.mean()),
                            "objective/rlhf_reward": float(total.mean()),
                            "objective/advantage_std": float(advantages.std())
                            if advantages.numel() > 1 else 0.0}}

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        logp = self.logprobs(self.policy, batch["batch"]).sequence().sum
        loss = -(batch["advantages"].to(logp.dtype) * logp).mean()
        return loss, dict(batch["metrics"])


class Reinforce(PolicyGradient):
    """REINFORCE with the batch-mean baseline: ``A_i = R_i − mean_j R_j`` over the
    step's whole batch, all ranks included (module docstring of
    :mod:`gaf.plugins.rlhf.policy_gradient`)."""

    def baseline(self, rewards: Tensor) -> Tensor:
        world = self.ctx.world
        mean = world.sum(rewards.sum()) / world.sum(float(rewards.numel()))
        return rewards - mean


class RLOO(PolicyGradient):
    """REINFORCE leave-one-out: ``A_i = R_i − mean_{j≠i} R_j`` over the k samples of a
    prompt (``samples_per_prompt`` ≥ 2)."""

    def setup(self, ctx: Any) -> None:
        if self.config.samples_per_prompt < 2:
            raise BadConfig(f"rloo needs samples_per_prompt >= 2 (the leave-one-out baseline "
                            f"of a sample is the mean of the others), got "
                            f"{self.config.samples_per_prompt}")
        super().setup(ctx)

    def baseline(self, rewards: Tensor) -> Tensor:
        return rloo_advantages(rewards)
