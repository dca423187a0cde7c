"""What the on-policy RL objectives (``reinforce``, ``rloo``, ``ppo``) share.

They start like the DPO family (:mod:`gaf.plugins.preference.pipeline`): the SFT
stage for a policy built from a name (``sft_steps``), a frozen copy of the SFT policy
as the reference ``π_ref``, and the same final evaluation (win rate against the
reference, mean true reward, sequence ``KL(π‖π_ref)`` on held-out prompts). Instead
of a preference dataset they sample their training data from the current policy, as
:class:`~gaf.interfaces.Rollout` objects: the log-probabilities of a rollout are those
of the tokens that were drawn (no re-tokenisation, EOS only where it was sampled),
and each rollout is a pure function of the step and the seed, so a resumed run draws
what the uninterrupted one would have. The reward is the run's ``reward`` component:
the task's ground truth (``sentiment-oracle``) by default, a learned reward model
with ``--reward RUN_DIR``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig
from gaf.interfaces import Rollout, RolloutPolicy, SequenceLogProbs, batched
from gaf.plugins.preference.data_order import EpochOrder
from gaf.plugins.preference.pipeline import PreferenceTraining
from gaf.plugins.preference.units import ScoredBatch
from gaf.runs import RunContext

__all__ = ["OnPolicyConfig", "OnPolicy"]


@attrs.define
class OnPolicyConfig:
    """Options shared by the on-policy objectives (the ``[objective]`` section)."""

    beta: float = option(0.05, "β: weight of the KL(π‖π_ref) penalty in the reward")
    sft_steps: int = option(1000, "steps of the SFT stage for a policy built from a name "
                                  "(0 = use it as built); a loaded policy skips the stage")
    max_new_tokens: int = option(64, "tokens generated per completion (rollouts and evaluation)")
    generation_batch_size: int = option(256, "prompts generated at once in evaluation")
    eval_prompts: int = option(200, "held-out prompts for win rate, reward and KL (0 = all)")
    eval_samples: int = option(4, "completions per held-out prompt from each policy (the "
                                  "win rate compares them in pairs)")
    eval_batch_size: int = option(128, "sequences scored at once outside training")

    def __attrs_post_init__(self) -> None:
        if self.beta < 0:
            raise BadConfig(f"beta must be >= 0, got {self.beta}")
        if self.max_new_tokens < 1:
            raise BadConfig(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        for name in ("generation_batch_size", "eval_samples", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise BadConfig(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sft_steps", "eval_prompts"):
            if getattr(self, name) < 0:
                raise BadConfig(f"{name} must be >= 0, got {getattr(self, name)}")


class OnPolicy(PreferenceTraining):
    """Setup, rollouts and evaluation of the on-policy objectives (module docstring)."""

    Config = OnPolicyConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "temperature",
            "reward": "sentiment-oracle"}

    def setup(self, ctx: RunContext) -> None:
        if ctx.world.enabled and ctx.spec.train.parallel == "fsdp":
            raise BadConfig(f"{ctx.spec.objective} samples inside each training step, which "
                            "train.parallel='fsdp' does not support yet; use 'ddp'")
        self.ctx = ctx
        self.task = ctx.component("task")
        self.sampler = ctx.component("sampler")
        self.reward_fn = ctx.component("reward")
        self.policy = self._sft_policy(ctx)
        if not isinstance(self.policy, RolloutPolicy):
            raise BadConfig(f"{ctx.spec.objective} needs a policy that can sample rollouts "
                            f"(gaf.interfaces.RolloutPolicy); "
                            f"{type(self.policy).__name__} has no rollout()")
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.batch_size = ctx.spec.train.batch_size
        self.train_prompts = list(self.task.prompts("train"))
        self.order = EpochOrder(len(self.train_prompts), ctx.spec.seed)
        self.skipped = 0
        self.data_stats = {"train_prompts": float(len(self.train_prompts))}

    def batch_loss(self, batch: ScoredBatch, policy: SequenceLogProbs,
                   ref: SequenceLogProbs | None) -> tuple[Tensor, dict[str, float]]:
        raise TypeError(f"{type(self).__name__} trains on rollouts, not preference pairs")

    def sample(self, prompts: Sequence[str], draw: int) -> Rollout:
        """Rollout number ``draw`` of ``prompts`` from the current policy (eval mode, no
        gradient), from a generator seeded by the run's seed, ``draw`` and the rank."""
        gen = torch.Generator(device=self.policy.device)
        gen.manual_seed(self.ctx.spec.seed * 1_000_003 + 7919 * draw + self.ctx.world.rank)
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
        """The DPO family's evaluation, plus ``sft_nll`` and ``reference_sft_nll``: the
        mean per-token NLL of held-out SFT examples (up to ``eval_batch_size`` × 2) under
        the policy and under the SFT reference, which shows what RL cost the language
        model (the "alignment tax" PPO-ptx is meant to reduce)."""
        out = super().evaluate(ctx)
        examples = list(self.task.sft_examples("eval"))[:2 * self.config.eval_batch_size]
        if examples:
            out["sft_nll"] = self._nll(self.policy, examples)
            out["reference_sft_nll"] = self._nll(self.reference, examples)
        return out

    def _nll(self, model: Any, examples: Sequence[Any]) -> float:
        total, count = 0.0, 0.0
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for chunk in batched(list(examples), self.config.eval_batch_size):
                lp = model.completion_logprobs(model.prepare([e.prompt for e in chunk],
                                                             [e.completion for e in chunk]))
                total += float(-lp.token_logps.sum())
                count += float(lp.mask.sum())
        model.train(was_training)
        return total / max(count, 1.0)

    def score(self, prompts: Sequence[str], rollout: Rollout, device: Any) -> Tensor:
        """``(B,)`` float32 rewards of a rollout's completions."""
        with torch.no_grad():
            scores = self.reward_fn(list(prompts), rollout.completions)
        return torch.as_tensor(scores, dtype=torch.float32).to(device)
