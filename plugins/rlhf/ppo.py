"""``ppo``: PPO with a per-token KL penalty, a learned critic and the pretraining mix
(PPO-ptx, InstructGPT).

One **rollout** samples one completion for each of ``batch_size × grad_accum ×
num_mini_batches`` training prompts from the current policy (the run's sampler;
ancestral sampling at temperature 1 by default, the distribution the ratios assume)
and scores it once, without gradient:

* per-token reward ``r_t = −β·k_t``, ``k_t`` the ``k1`` (``log π − log π_ref``) or
  ``k3`` estimate of the KL to the frozen SFT policy, plus on the *last real token*
  the sequence reward ``r(x, y)`` (the run's ``reward``: the task's ground truth by
  default, ``--reward RUN_DIR`` for a learned reward model) minus
  ``missing_eos_penalty`` when the completion did not end with EOS;
* values ``V_t`` from the critic, a scalar head on a transformer. ``value_init``:
  ``reward`` copies the reward model (InstructGPT), ``policy`` a copy of the SFT
  policy with a zero head (a separate critic), ``auto`` the first when the reward
  is a ``gpt2-reward`` model with the policy's tokenizer;
* advantages by GAE (``gamma``, ``lam``), whitened over the rollout's tokens (all
  ranks), and returns ``Â + V``.

Then ``ppo_epochs`` passes over the rollout in ``num_mini_batches`` shuffled
minibatches, one optimiser step each (``train.steps`` counts these steps, so a run
makes ``steps / (ppo_epochs × num_mini_batches)`` rollouts). The loss of a minibatch:

    L = L_clip(π) + vf_coef · L_V + ptx_coef · NLL_ptx

with PPO's clipped surrogate (``cliprange``), the clipped value loss
(``cliprange_value``) and, when ``ptx_coef > 0``, the mean per-token negative
log-likelihood of ``ptx_batch_size`` examples of the task's SFT corpus: the
``γ·E_{x∼D_pretrain}[log π(x)]`` term of InstructGPT's PPO-ptx objective.

β is fixed, or with ``target_kl > 0`` adapted after each rollout by Ziegler et al.'s
controller (:mod:`.kl_control`), whose state is saved in checkpoints. Checkpoints
fall between rollouts: ``train.steps`` and ``train.save_every`` must be multiples of
``ppo_epochs × num_mini_batches``.

Logged (TRL's names): ``objective/kl`` (the mean over sequences of the summed
``kl_estimator``, k1 or k3, which the adaptive controller also reads),
``objective/scores`` (mean reward before the EOS penalty),
``objective/non_score_reward`` (``−β·Σk``),
``objective/rlhf_reward`` (their sum with the penalty), ``objective/beta``,
``objective/no_eos`` (fraction without EOS), ``policy/clipfrac``, ``policy/approxkl``
(``½·mean (log π − log π_old)²``), ``loss/policy``, ``loss/value``, ``loss/ptx``,
``value/clipfrac``, ``value/explained_variance``, ``policy/entropy_avg`` (mean entropy
of the policy's next-token distribution over the minibatch's tokens). The evaluation
is the DPO family's: win rate against the SFT policy, mean true reward and sequence
KL on the held-out split.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from gaf.config import option
from gaf.errors import BadConfig, GafError
from gaf.interfaces import Rollout
from gaf.plugins.alignment.base import disable_dropout
from gaf.plugins.alignment.groups import accepts_option
from gaf.runs import RunContext
from gaf.seeding import EpochOrder

from .advantages import explained_variance, gae, kl_k1, kl_k3, masked_mean, token_rewards
from .kl_control import KLController
from .losses import clipped_policy_loss, clipped_value_loss
from .on_policy import OnPolicy, OnPolicyConfig
from .reward_model import RewardModel

__all__ = ["PPOConfig", "PPO", "RolloutBuffer"]


@attrs.define
class PPOConfig(OnPolicyConfig):
    """Options of ``ppo`` (module docstring); TRL's names where it has one."""

    target_kl: float = option(0.0, "target sequence KL (nats) of the adaptive KL controller "
                                   "(Ziegler et al.); 0 = fixed beta", ge=0)
    kl_horizon: int = option(32, "horizon of the adaptive controller, in episodes: β moves "
                                 "by at most 20% × rollout / horizon per rollout (Ziegler et "
                                 "al. used 10,000 for ~10^5 episodes; the default run has "
                                 "1,600 and a learned reward's scale may be far from 1)", ge=1)
    kl_estimator: Literal["k1", "k3"] = option(
        "k1", "per-token KL in the reward: 'k1' (log-ratio) or 'k3' (non-negative)")
    ppo_epochs: int = option(4, "passes over each rollout", ge=1)
    num_mini_batches: int = option(1, "minibatches per pass (rollout = batch_size × "
                                      "grad_accum × num_mini_batches prompts)", ge=1)
    cliprange: float = option(0.2, "ε of the clipped policy surrogate", ge=0)
    cliprange_value: float = option(0.2, "ε of the clipped value loss", ge=0)
    vf_coef: float = option(0.1, "weight of the value loss", ge=0)
    gamma: float = option(1.0, "discount γ of GAE", ge=0, le=1)
    lam: float = option(0.95, "λ of GAE", ge=0, le=1)
    missing_eos_penalty: float = option(0.0, "subtracted from the reward of a completion "
                                             "without EOS (0 = off)", ge=0)
    value_init: Literal["auto", "reward", "policy"] = option(
        "auto", "critic initialisation: 'reward' (copy of the reward model), 'policy' (SFT "
                "transformer, zero head), 'auto' (reward when it is a gpt2-reward model)")
    ptx_coef: float = option(0.0, "γ of PPO-ptx: weight of the NLL of SFT-corpus examples "
                                  "(0 = plain PPO)", ge=0)
    ptx_batch_size: int = option(0, "SFT examples per step for the ptx term (0 = batch_size)", ge=0)


@attrs.frozen
class RolloutBuffer:
    """One scored rollout on this rank: ``(B, L)`` per-token tensors in the policy's
    left-packed completion layout (``mask`` marks real tokens)."""

    number: int
    rollout: Rollout
    mask: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    metrics: dict[str, float]


class PPO(OnPolicy):
    """PPO / PPO-ptx on the policy and a critic (module docstring)."""

    Config = PPOConfig
    unit = "sequences"
    # Chosen from the DPO run's SFT policy on validation: docs/results.md § PPO.
    train_defaults = {"steps": 400, "batch_size": 16, "lr": 3e-4, "warmup_steps": 10,
                      "log_every": 16, "max_grad_norm": 1.0}
    plot_keys = ("objective/scores", "objective/kl", "objective/rlhf_reward", "objective/beta",
                 "loss/policy", "loss/value", "policy/clipfrac", "value/explained_variance")

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        cfg, train = self.config, ctx.spec.train
        self.updates = cfg.ppo_epochs * cfg.num_mini_batches
        for name in ("steps", "save_every"):
            if getattr(train, name) % self.updates:
                raise BadConfig(
                    f"ppo: train.{name} ({getattr(train, name)}) must be a multiple of "
                    f"ppo_epochs × num_mini_batches ({self.updates}), so that checkpoints "
                    f"fall between rollouts")
        self.local_batch = ctx.world.shard(0, self.batch_size)[1]
        self._entropy = accepts_option(self.policy, "completion_logprobs", "entropy")
        self.rollout_size = self.batch_size * train.grad_accum * cfg.num_mini_batches
        self.critic = self._make_critic(ctx)
        self.kl_ctl = KLController(cfg.beta, cfg.target_kl, cfg.kl_horizon)
        self.buffer: RolloutBuffer | None = None
        self.sft_examples = list(self.task.sft_examples("train")) if cfg.ptx_coef else []
        if cfg.ptx_coef and not self.sft_examples:
            raise BadConfig("ptx_coef > 0 needs a task with SFT examples (the pretraining mix)")
        self.ptx_batch = cfg.ptx_batch_size or self.batch_size
        if self.sft_examples:
            ctx.world.shard(0, self.ptx_batch)  # an uneven split fails here
            self.ptx_order = EpochOrder(len(self.sft_examples), ctx.spec.seed, "ptx-order")
        self.data_stats["rollout_size"] = float(self.rollout_size)
        ctx.log(f"ppo: rollouts of {self.rollout_size} prompts, {self.updates} updates each, "
                f"{train.steps // self.updates} rollouts; critic from {self.critic_source}")

    def _make_critic(self, ctx: RunContext) -> RewardModel:
        init = self.config.value_init
        rm = self.reward_fn if isinstance(self.reward_fn, RewardModel) else None
        fits = rm is not None and _same_tokenizer(rm.tokenizer, self.policy.tokenizer,
                                                  self.train_prompts[:32])
        if init == "reward" and not fits:
            raise BadConfig("value_init='reward' needs --reward RUN_DIR of a gpt2-reward model "
                            "with the policy's tokenizer; use value_init='policy'"
                            if rm is None else
                            "value_init='reward': the reward model's tokenizer differs from the "
                            "policy's, so it cannot read the policy's rollouts; use "
                            "value_init='policy'")
        if fits and init in ("auto", "reward"):
            self.critic_source = "the reward model"
            critic = copy.deepcopy(rm)
        else:
            self.critic_source = "the SFT policy (new value head)"
            critic = RewardModel.from_policy(self.policy)
            torch.nn.init.zeros_(critic.score.weight)
        if self.config.disable_dropout:
            disable_dropout(critic)
        return critic.to(self.policy.device).train().requires_grad_(True)

    def modules(self) -> dict[str, Any]:
        return {"policy": self.policy, "critic": self.critic}

    def training_state(self) -> dict[str, Any]:
        return {"kl_controller": self.kl_ctl.state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.kl_ctl.load_state(state["kl_controller"])

    # ------------------------------------------------------------------ rollouts

    def make_rollout(self, number: int) -> RolloutBuffer:
        """Sample and score rollout ``number`` (module docstring); updates β after it."""
        cfg, world = self.config, self.ctx.world
        start, count = world.shard(number * self.rollout_size, self.rollout_size)
        prompts = [self.train_prompts[i] for i in self.order.slice(start, count)]
        rollout = self.sample(prompts, number)
        self.policy.eval()
        self.critic.eval()
        with torch.no_grad(), self.ctx.autocast():
            lp = self.logprobs(self.policy, rollout.batch)
            ref = self.logprobs(self.reference, rollout.batch)
            values = self.critic.values(rollout.batch).float()
        self.policy.train()
        self.critic.train()
        mask = lp.mask
        logp, ref_logp = lp.token_logps.float(), ref.token_logps.float()
        scores = self.rewards_of(prompts, rollout, logp.device)
        no_eos = ~rollout.ended.to(logp.device)
        penalised = scores - cfg.missing_eos_penalty * no_eos.float()
        estimate = (kl_k1 if cfg.kl_estimator == "k1" else kl_k3)(logp, ref_logp) * mask
        beta = self.kl_ctl.beta
        rewards = token_rewards(penalised, estimate, mask, beta)
        values = values * mask
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        advantages = self._whiten(advantages, mask)
        seq_kl = estimate.sum(1)  # the configured estimator, as TRL logs it
        non_score = -beta * estimate.sum(1)
        n = world.sum(float(len(prompts)))
        mean_kl = world.sum(float(seq_kl.sum())) / n
        metrics = {"objective/kl": mean_kl,
                   "objective/scores": world.sum(float(scores.sum())) / n,
                   "objective/non_score_reward": world.sum(float(non_score.sum())) / n,
                   "objective/rlhf_reward": world.sum(float((penalised + non_score).sum())) / n,
                   "objective/beta": beta,
                   "objective/no_eos": world.sum(float(no_eos.sum())) / n,
                   "objective/length": world.sum(float(mask.sum())) / n,
                   "value/explained_variance": float(explained_variance(values, returns, mask))}
        self.kl_ctl.update(mean_kl, int(n))
        return RolloutBuffer(number, rollout, mask, logp, values, advantages, returns, metrics)

    def _whiten(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(x − mean) / std`` over the real tokens of every rank's rollout."""
        world, m = self.ctx.world, mask.to(x.dtype)
        n = max(world.sum(float(m.sum())), 1.0)
        mean = world.sum(float((x * m).sum())) / n
        var = world.sum(float((((x - mean) * m) ** 2).sum())) / n
        return (x - mean) * m / (var + 1e-8) ** 0.5

    # ------------------------------------------------------------------ updates

    def train_batch(self, index: int) -> dict[str, Any]:
        """Micro-batch ``index``: rollout ``index // (updates × grad_accum)``, made when
        its first micro-batch is asked for, then shuffled minibatches of it."""
        accum = self.ctx.spec.train.grad_accum
        per_rollout = self.updates * accum
        number, within = divmod(index, per_rollout)
        if self.buffer is None or self.buffer.number != number:
            if within:
                raise GafError(f"ppo: micro-batch {index} is inside rollout {number}, which was "
                               f"never sampled (a resume between rollouts is required)")
            self.buffer = self.make_rollout(number)
        epoch, pos = divmod(within, self.config.num_mini_batches * accum)
        n_local = len(self.buffer.rollout.completions)
        perm = self.ctx.rng("ppo-minibatches", number, epoch, self.ctx.world.rank
                            ).permutation(n_local)
        rows = torch.as_tensor(perm[pos * self.local_batch:(pos + 1) * self.local_batch])
        out: dict[str, Any] = {"buffer": self.buffer, "rows": rows}
        if self.sft_examples:
            start, count = self.ctx.world.shard(index * self.ptx_batch, self.ptx_batch)
            picks = [self.sft_examples[i] for i in self.ptx_order.slice(start, count)]
            out["ptx"] = self.policy.prepare([e.prompt for e in picks],
                                             [e.completion for e in picks])
        return out

    def loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        buf = batch["buffer"]
        rows = batch["rows"].to(buf.mask.device)
        lm_batch = buf.rollout.batch.select(rows)
        lp = self.logprobs(self.policy, lm_batch, entropy=self._entropy)
        L = lp.mask.shape[1]
        mask = buf.mask[rows, :L]
        old_logp, old_values = buf.logprobs[rows, :L], buf.values[rows, :L]
        advantages, returns = buf.advantages[rows, :L], buf.returns[rows, :L]
        logp = lp.token_logps.float()
        pg_loss, clipfrac = clipped_policy_loss(logp, old_logp, advantages, mask, cfg.cliprange)
        values = self.critic.values(lm_batch).float()
        vf_loss = clipped_value_loss(values, old_values, returns, mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        with torch.no_grad():
            approxkl = 0.5 * masked_mean((logp - old_logp) ** 2, mask)
            v_clipped = ((values - old_values).abs() > cfg.cliprange_value) & mask
        metrics = {**buf.metrics, "loss/policy": float(pg_loss.detach()),
                   "loss/value": float(vf_loss.detach()),
                   "policy/clipfrac": float(clipfrac), "policy/approxkl": float(approxkl),
                   "value/clipfrac": float(v_clipped.sum() / mask.sum().clamp_min(1))}
        if lp.entropy is not None:
            metrics["policy/entropy_avg"] = float(lp.entropy[mask].mean()) if mask.any() else 0.0
        if "ptx" in batch:
            ptx = self.policy.completion_logprobs(batch["ptx"])
            nll = self.ctx.world.mean(-ptx.token_logps.sum(), ptx.mask.sum())
            loss = loss + cfg.ptx_coef * nll
            metrics["loss/ptx"] = float(-ptx.token_logps.sum().detach()
                                        / ptx.mask.sum().clamp_min(1))
        return loss, metrics

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        out = super().evaluate(ctx)
        out["beta_final"] = self.kl_ctl.beta
        return out


def _same_tokenizer(a: Any, b: Any, probes: list[str]) -> bool:
    """Whether two tokenizers agree on size, special ids and the encoding of ``probes``."""
    if a is b:
        return True
    if (a.vocab_size, a.bos_id, a.eos_id, a.pad_id) != (b.vocab_size, b.bos_id, b.eos_id,
                                                        b.pad_id):
        return False
    return all(a.encode(p) == b.encode(p) for p in probes)
