"""What the on-policy RL objectives (``reinforce``, ``rloo``, ``ppo``) share.

They start from the alignment base (:mod:`gaf.plugins.alignment.base`): the SFT stage
for a policy built from a name (``sft_steps``), dropout off, a frozen copy of the SFT
policy as the reference ``π_ref``, and the held-out evaluation (win rate against the
reference, mean true reward, sequence ``KL(π‖π_ref)``). Instead of a preference
dataset they sample their training data from the current policy, as
:class:`~gaf.interfaces.Rollout` objects: the log-probabilities of a rollout are those
of the tokens that were drawn (no re-tokenisation, EOS only where it was sampled),
and each rollout is a pure function of the step and the seed, so a resumed run draws
what the uninterrupted one would have.

**On-policy means on-policy.** The gradient and the KL estimate assume the samples
are draws of the distribution the objective scores. The run's sampler must therefore
state a temperature (:class:`gaf.interfaces.Sampler`'s ``scoring_temperature``):
``temperature`` at any T (the default, T = 1), or ``top-p`` with p = 1. Samples
drawn at ``T ≠ 1`` are scored under ``softmax(logits / T)``, for the policy and the
reference alike, as TRL does. A truncating sampler (``top-k``, ``top-p`` with p < 1,
``greedy``) is refused with an error.

The reward is the run's ``reward`` component, frozen (eval mode, no gradients,
dropout off): the task's ground truth (``sentiment-oracle``) by default, a learned
reward model with ``--reward RUN_DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig
from gaf.interfaces import CompletionLogProbs, Rollout, RolloutPolicy
from gaf.plugins.alignment.base import (AlignmentConfig, AlignmentObjective,
                                        eval_samples_option)
from gaf.plugins.alignment.evaluation import mean_nll
from gaf.runs import RunContext
from gaf.seeding import EpochOrder

__all__ = ["OnPolicyConfig", "OnPolicy", "scoring_temperature"]


@attrs.define
class OnPolicyConfig(AlignmentConfig):
    """Options shared by the on-policy objectives (the ``[objective]`` section)."""

    beta: float = option(0.05, "β: weight of the KL(π‖π_ref) penalty in the reward", ge=0)
    eval_samples: int = eval_samples_option()


def scoring_temperature(sampler: Any, objective: str) -> float:
    """The temperature ``T`` whose ``softmax(logits / T)`` ``sampler`` draws from, or a
    :class:`BadConfig` naming the sampler when it truncates or reshapes it."""
    t = getattr(sampler, "scoring_temperature", None)
    if isinstance(t, int | float) and t > 0:
        return float(t)
    name = getattr(sampler, "gaf_name", type(sampler).__name__)
    raise BadConfig(
        f"{objective} is on-policy: it scores its samples under the distribution they were "
        f"drawn from, and sampler {name!r} does not draw from softmax(logits / T) over the "
        f"whole vocabulary (it truncates it), so the update would be off-policy and the KL "
        f"estimate biased; use --sampler temperature (any temperature, set with "
        f"--set sampler.temperature=T; samples are then scored at T, as TRL does)")


class OnPolicy(AlignmentObjective):
    """Setup, rollouts and evaluation of the on-policy objectives (module docstring)."""

    Config: type = OnPolicyConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "temperature",
            "reward": "sentiment-oracle"}

    def setup(self, ctx: RunContext) -> None:
        if ctx.world.enabled and ctx.spec.train.parallel == "fsdp":
            raise BadConfig(f"{ctx.spec.objective} samples inside each training step, which "
                            "train.parallel='fsdp' does not support yet; use 'ddp'")
        self.temperature = scoring_temperature(ctx.component("sampler"), ctx.spec.objective)
        self.ctx = ctx
        # the reward first: a wrong --reward is refused before an SFT stage trains
        self.reward_fn = self.frozen_component("reward")
        self.setup_policy(ctx)
        if not isinstance(self.policy, RolloutPolicy):
            raise BadConfig(f"{ctx.spec.objective} needs a policy that can sample rollouts "
                            f"(gaf.interfaces.RolloutPolicy); "
                            f"{type(self.policy).__name__} has no rollout()")
        self.batch_size = ctx.spec.train.batch_size
        self.train_prompts = list(self.task.prompts("train"))
        self.order = EpochOrder(len(self.train_prompts), ctx.spec.seed, "prompt-order")
        self.skipped = 0
        self.data_stats = {"train_prompts": float(len(self.train_prompts))}

    def modules(self) -> dict[str, Any]:
        return {"policy": self.policy}

    def logprobs(self, model: Any, batch: Any, entropy: bool = False) -> CompletionLogProbs:
        """``model``'s log-probs of ``batch`` under the sampling distribution (logits
        divided by the sampler's temperature when it is not 1); ``entropy`` also asks
        for the per-token entropy of that distribution."""
        options: dict[str, Any] = {}
        if self.temperature != 1.0:
            options["temperature"] = self.temperature
        if entropy:
            options["entropy"] = True
        return model.completion_logprobs(batch, **options)

    def sample(self, prompts: Sequence[str], draw: int) -> Rollout:
        """Rollout number ``draw`` of ``prompts`` from the current policy (eval mode, no
        gradient), on the run's ``"rollouts"`` stream at ``(draw, rank)``."""
        gen = self.ctx.generator("rollouts", draw, self.ctx.world.rank, device=self.policy.device)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                return self.policy.rollout(list(prompts), sampler=self.sampler,
                                           max_new_tokens=self.config.max_new_tokens,
                                           generator=gen)
        finally:
            self.policy.train(was_training)

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        """The held-out win rate, rewards and KL, plus ``sft_nll`` and
        ``reference_sft_nll``: the mean per-token NLL of held-out SFT examples (up to
        ``eval_batch_size`` × 2) under the policy and under the SFT reference, which
        shows what RL cost the language model (the "alignment tax" PPO-ptx is meant to
        reduce)."""
        out: dict[str, float] = dict(self.data_stats)
        out.update(self.evaluate_policy(ctx))
        size = self.config.eval_batch_size
        examples = list(self.task.sft_examples(self.heldout_split))[:2 * size]
        if examples:
            out["sft_nll"] = mean_nll(self.policy, examples, size)
            out["reference_sft_nll"] = mean_nll(self.reference, examples, size)
        return out

    def rewards_of(self, prompts: Sequence[str], rollout: Rollout, device: Any) -> Tensor:
        """``(B,)`` float32 rewards of a rollout's completions."""
        with torch.no_grad():
            scores = self.reward_fn(list(prompts), rollout.completions)
        return torch.as_tensor(scores, dtype=torch.float32).to(device)
