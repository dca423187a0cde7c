"""The ``reward`` objective: train a reward model on K-ranked lists (InstructGPT, step 2).

Pipeline (the alignment base and the DPO family's preference data,
:mod:`gaf.plugins.preference.data`):

1. an SFT policy: ``--policy RUN_DIR`` (an SFT or DPO run, a saved policy, an HF GPT-2
   directory), or a name, which trains one in ``RUN_DIR/sft`` first;
2. ranked lists: the task's own (``--data`` with ``{prompt, responses, ranking}`` or
   ``{prompt, chosen, rejected}`` records; a pair is K = 2), or K completions of each
   training prompt sampled from the SFT policy and ranked by the task's ground-truth
   reward (``RUN_DIR/data/preferences.jsonl``);
3. the reward model :class:`~gaf.plugins.rlhf.reward_model.RewardModel` starts as the
   SFT transformer with a fresh scalar head and is trained with
   :func:`~gaf.plugins.rlhf.losses.ranked_reward_loss`. One batch element is one
   prompt's whole ranking: its K responses are scored once each (K forward passes)
   and all its ``C(K, 2)`` pairs are formed from those K scores; ``batch_size``
   counts rankings. ``center_coef`` adds ``c · mean(r²)`` to keep rewards centred;
4. evaluation on the held-out split (``eval_split``: K fresh samples of each prompt,
   ranked by the ground truth, or the task's held-out ranked lists): pairwise ``accuracy``, ``reward_mean`` and
   ``reward_std`` of the learned reward and, when the task has a ground truth, its
   Pearson ``correlation`` with it. Samples with both rewards go to
   ``samples/samples.jsonl``.

The trained model is saved in ``RUN_DIR/reward/``: ``--reward RUN_DIR`` and
``gaf.load("reward", RUN_DIR)`` load it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import torch
from torch import Tensor

from gaf.atomic import atomic_write_text
from gaf.config import option
from gaf.interfaces import PreferenceGroup
from gaf.plugins.alignment.base import disable_dropout
from gaf.plugins.alignment.groups import fitting, group_chunks
from gaf.plugins.preference.data import PreferenceData, PreferenceDataConfig
from gaf.plugins.preference.labelling import sample_groups
from gaf.plugins.preference.units import ScoredBatch
from gaf.runs import RunContext

from .losses import ranked_reward_loss
from .reward_model import RewardModel

__all__ = ["RewardTraining", "RewardConfig"]


@attrs.define
class RewardConfig(PreferenceDataConfig):
    """Options of ``reward``."""

    margin: float = option(0.0, "m in −log σ(r_w − r_l − m): the reward gap asked of every pair", ge=0)
    center_coef: float = option(0.0, "c of the centring term c · mean(r²) (0 = off; ~0.01)", ge=0)


class RewardTraining(PreferenceData):
    """Train a ``gpt2-reward`` model (the SFT transformer plus a scalar head) on K-ranked
    lists: ``−1/C(K,2) Σ_{i<j} log σ(r(x, y_i) − r(x, y_j) − margin)`` per prompt, all
    pairs from K forward passes (``batch_size`` counts rankings). The rankings are the
    task's (``--data``) or K SFT samples per prompt ranked by the task's reward, as for
    ``dpo``. Evaluates pairwise accuracy, reward mean/std and the correlation with the
    ground truth on held-out prompts; the model loads as ``--reward RUN_DIR``."""

    Config: type = RewardConfig
    unit = "rankings"
    needs_reference = False  # the SFT policy is only the starting point
    # chosen on the sentiment task (docs/results.md says on which split)
    train_defaults = {"steps": 600, "batch_size": 16, "lr": 1e-3, "warmup_steps": 20,
                      "log_every": 10, "max_grad_norm": 10.0}
    no_units_hint = ("; a reward model needs ranked responses: pass --data with {prompt, "
                     "responses, ranking} or {prompt, chosen, rejected} records")
    plot_keys = ("loss", "accuracy", "rewards/margins", "rewards/chosen", "rewards/rejected",
                 "reward_std", "grad_norm")

    def units_of(self, group: PreferenceGroup) -> list[Any]:
        return [tuple(group.pairs)] if group.pairs else []

    def responses_of(self, unit: Any) -> list[int]:
        return sorted({i for pair in unit for i in pair})

    # ----------------------------------------------------------------- training

    def setup(self, ctx: RunContext) -> None:
        self.setup_policy(ctx)
        self.setup_data(ctx)
        options = attrs.asdict(self.policy.config)
        blank = ctx.registry.create("reward", "gpt2-reward", **options)
        self.reward_model = RewardModel.from_policy(self.policy, blank)
        if self.config.disable_dropout:
            disable_dropout(self.reward_model)

    def modules(self) -> dict[str, Any]:
        return {"reward": self.reward_model}

    def batch_model(self) -> Any:
        return self.reward_model

    def loss(self, batch: tuple[ScoredBatch, Any]) -> tuple[Tensor, dict[str, float]]:
        scored, lm_batch = batch
        r = self.reward_model.scores(lm_batch)  # one forward per response
        chosen, rejected, group = [], [], []
        for b, (g, pairs) in enumerate(scored.units):
            for i, j in pairs:
                chosen.append(scored.local[(g, i)])
                rejected.append(scored.local[(g, j)])
                group.append(b)
        device = r.device
        rc = r[torch.tensor(chosen, device=device)]
        rr = r[torch.tensor(rejected, device=device)]
        loss = ranked_reward_loss(rc, rr, torch.tensor(group, device=device),
                                  len(scored.units), self.config.margin)
        if self.config.center_coef:
            loss = loss + self.config.center_coef * r.pow(2).mean()
        with torch.no_grad():
            metrics = {"accuracy": float((rc > rr).float().mean()),
                       "rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
                       "rewards/margins": float((rc - rr).mean()),
                       "reward_mean": float(r.mean()),
                       "reward_std": float(r.std()) if r.numel() > 1 else 0.0}
        return loss, metrics

    # --------------------------------------------------------------- evaluation

    def evaluate(self, ctx: RunContext) -> dict[str, float]:
        out: dict[str, float] = dict(self.data_stats)
        groups, truth = self._heldout(ctx)
        if not groups:
            return out
        rm = self.reward_model.eval()
        learned: list[float] = []
        for chunk in group_chunks(groups, self.config.eval_batch_size):
            prompts = [g.prompt for g in chunk for _ in g.responses]
            completions = [y for g in chunk for y in g.responses]
            learned += [float(x) for x in rm(prompts, completions)]
        correct = total = offset = 0
        rows: list[dict[str, Any]] = []
        for k, g in enumerate(groups):
            for i, j in g.pairs:
                correct += int(learned[offset + i] > learned[offset + j])
                total += 1
            for i, y in enumerate(g.responses):
                row = {"prompt": g.prompt, "completion": y,
                       "learned_reward": round(learned[offset + i], 5)}
                if truth is not None:
                    row["reward"] = round(truth[k][i], 5)
                rows.append(row)
            offset += len(g.responses)
        values = torch.tensor(learned, dtype=torch.float64)
        out.update(eval_groups=float(len(groups)), eval_pairs=float(total),
                   accuracy=correct / total if total else float("nan"),
                   reward_mean=float(values.mean()),
                   reward_std=float(values.std()) if len(learned) > 1 else 0.0)
        if truth is not None:
            gold = torch.tensor([t for ts in truth for t in ts], dtype=torch.float64)
            out["correlation"] = pearson(values, gold)
        atomic_write_text(ctx.path("samples", "samples.jsonl"),
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return out

    def _heldout(self, ctx: RunContext) -> tuple[list[PreferenceGroup], list[list[float]] | None]:
        """Held-out ranked groups, with the ground-truth reward of each response when the
        task has one: the task's own held-out lists, else K fresh SFT samples of each
        held-out prompt, ranked by the task's reward."""
        groups = self.heldout_groups()
        truth = None
        reward = self.task.reward()
        if not groups and reward is not None:
            prompts = self.heldout_prompts()
            cfg = self.config
            self.policy.eval()
            with torch.no_grad():
                groups, truth = sample_groups(
                    self.policy, self.sampler, reward, prompts, k=cfg.samples_per_prompt,
                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generation_batch_size,
                    rule="order", temperature=cfg.label_temperature,
                    generator=ctx.generator("reward-heldout-samples"))
        kept, _ = fitting(groups, self.reward_model.tokenizer, self.reward_model.config.n_positions)
        if truth is not None:
            keep = {id(g) for g in kept}
            truth = [t for g, t in zip(groups, truth) if id(g) in keep]
        return kept, truth


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two 1-D tensors (nan when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return float((x * y).sum() / denom) if denom > 0 else float("nan")
