"""The alignment base: SFT policy, frozen reference, dropout off, held-out split.

:class:`AlignmentObjective` is what ``dpo`` (and its family), ``reward``,
``reinforce``, ``rloo`` and ``ppo`` derive from. ``setup_policy(ctx)`` does the
common start:

1. **SFT policy.** A policy loaded from a path (``--policy RUN_DIR``, ``--init PATH``
   or a Hugging Face GPT-2 directory) is taken as the SFT policy. A policy built from
   a registered name is first fine-tuned with the ``sft`` objective for
   ``sft_steps`` steps on the task's examples, as a sub-run in ``RUN_DIR/sft/``
   (``--init RUN_DIR/sft`` reuses it); ``sft_steps = 0`` uses it as built.
2. **Dropout off.** With ``disable_dropout`` (the default, as TRL's
   ``disable_dropout=True``) every dropout probability of the policy is set to 0
   before anything is copied from it, so the reference, PPO's critic and the
   policy score the same text identically, and at ``π = π_ref`` the DPO loss is
   exactly ``ln 2``. A checkpoint's own config (e.g. an HF GPT-2 with
   ``*_pdrop = 0.1``) is left as it was; only the modules change.
3. **Frozen reference.** A copy of the SFT policy in eval mode without gradients,
   ``π_ref``. Every frozen model (:func:`freeze`) is put in eval mode, so its
   outputs are deterministic whatever the dropout.

Every held-out figure reads the split ``eval_split``: ``"eval"`` (the default, the
headline figures) or ``"validation"`` (for choosing defaults, β and learning rates:
tuning scripts set it, so that the eval split is read once, for the headline).
"""

from __future__ import annotations

import abc
import copy
from typing import Any, Literal

import attrs
from torch import Tensor, nn

from gaf.components import load_from
from gaf.config import option
from gaf.interfaces import PreferenceGroup
from gaf.runs import RunContext

from .groups import score_groups

__all__ = ["AlignmentConfig", "AlignmentObjective", "disable_dropout", "freeze",
           "eval_samples_option", "HELD_OUT_SPLITS"]

#: the splits a held-out evaluation may read
HELD_OUT_SPLITS = ("eval", "validation")


@attrs.define
class AlignmentConfig:
    """Options every alignment objective has (the ``[objective]`` section)."""

    sft_steps: int = option(1000, "steps of the SFT stage for a policy built from a name "
                                  "(0 = use it as built); a loaded policy skips the stage", ge=0)
    max_new_tokens: int = option(64, "tokens generated per completion (data, rollouts and "
                                     "evaluation)", ge=1)
    generation_batch_size: int = option(256, "prompts generated at once", ge=1)
    eval_prompts: int = option(200, "held-out prompts for the evaluation (0 = all)", ge=0)
    eval_batch_size: int = option(128, "sequences scored at once outside training", ge=1)
    eval_split: Literal["eval", "validation"] = option(
        "eval", "held-out split the evaluation reads: 'eval' for headline figures, "
                "'validation' for tuning (sweeps and tuning scripts set it)")
    disable_dropout: bool = option(True, "set every dropout probability of the policy, "
                                         "reference, critic and reward model to 0 (TRL's "
                                         "disable_dropout); false keeps the policy's")


def eval_samples_option() -> Any:
    """The ``eval_samples`` option of objectives judged by win rate (one declaration
    for the DPO family and the on-policy objectives)."""
    return option(4, "completions per held-out prompt from each policy (the win rate "
                     "compares them in pairs)", ge=1)


def disable_dropout(module: nn.Module) -> int:
    """Set the probability of every dropout module inside ``module`` to 0; returns how
    many had a non-zero one."""
    changed = 0
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p:
            m.p = 0.0
            changed += 1
    return changed


def freeze(model: Any) -> Any:
    """``model`` in eval mode without gradients (a frozen reference or reward model);
    anything that is not an ``nn.Module`` is returned as it is."""
    if isinstance(model, nn.Module):
        model.eval().requires_grad_(False)
    return model


class AlignmentObjective(abc.ABC):
    """Setup shared by the alignment objectives (module docstring). Subclasses call
    :meth:`setup_policy` from ``setup`` and implement the rest of the
    :class:`~gaf.interfaces.Objective` contract."""

    Config: type = AlignmentConfig
    uses = {"policy": "gpt2-tiny", "task": "sentiment", "sampler": "top-p"}
    #: whether :meth:`setup_policy` keeps a frozen reference copy of the SFT policy
    needs_reference = True

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    # -------------------------------------------------------------------- setup

    def setup_policy(self, ctx: RunContext) -> None:
        """``ctx``, ``task``, ``sampler``, the SFT ``policy`` (dropout off unless kept)
        and its frozen copy ``reference`` (``None`` unless :attr:`needs_reference`)."""
        self.ctx = ctx
        self.task = ctx.component("task")
        self.sampler = ctx.component("sampler")
        self.policy = self._sft_policy(ctx)
        if self.config.disable_dropout and isinstance(self.policy, nn.Module):
            disable_dropout(self.policy)
        self.reference = freeze(copy.deepcopy(self.policy)) if self.needs_reference else None

    def frozen_component(self, kind: str) -> Any:
        """The run's ``kind`` component (a reward model, say) frozen: eval mode, no
        gradients, and dropout off unless ``disable_dropout`` is false."""
        model = self.ctx.component(kind)
        if self.config.disable_dropout and isinstance(model, nn.Module):
            disable_dropout(model)
        return freeze(model)

    def _sft_policy(self, ctx: RunContext) -> Any:
        comp = ctx.spec.components["policy"]
        if ctx.registry.is_path("policy", comp.name) or self.config.sft_steps == 0:
            return ctx.component("policy")
        sft_dir = ctx.run_dir / "sft"
        if not (sft_dir / "policy" / "gaf.json").is_file():
            from gaf.launch import train_stage

            ctx.log(f"stage 1: supervised fine-tuning ({self.config.sft_steps} steps) in "
                    f"{sft_dir}")
            train_stage(ctx, sft_dir, "sft", ("policy", "task"),
                        {"steps": self.config.sft_steps}, label="SFT stage")
        return load_from(ctx.registry, "policy", sft_dir / "policy").to(ctx.device)

    # ---------------------------------------------------------------- held out

    @property
    def heldout_split(self) -> str:
        """The split every held-out figure reads (``eval_split``)."""
        return self.config.eval_split

    def heldout_prompts(self) -> list[str]:
        """The first ``eval_prompts`` prompts of the held-out split (all when 0)."""
        prompts = list(self.task.prompts(self.heldout_split))
        return prompts[:self.config.eval_prompts] if self.config.eval_prompts else prompts

    def heldout_groups(self) -> list[PreferenceGroup]:
        """The task's held-out preference groups that have pairs (``[]`` for a task
        without preference data)."""
        provided = getattr(self.task, "preference_groups", None)
        if provided is None:
            return []
        return [g for g in provided(self.heldout_split) if g.pairs]

    def score(self, model: Any, groups: list[PreferenceGroup]) -> Tensor:
        """``(N, 2)`` (sum log-prob, token count) of every response of ``groups``
        under ``model``, without gradients (:func:`.groups.score_groups`)."""
        return score_groups(model, groups, self.config.eval_batch_size, self.ctx.autocast)

    def evaluate_policy(self, ctx: RunContext) -> dict[str, float]:
        """The held-out win rate, rewards and KL of the policy against the reference
        (:func:`.evaluation.policy_evaluation`)."""
        from .evaluation import policy_evaluation

        prompts = self.heldout_prompts()
        return policy_evaluation(self, ctx, prompts) if prompts else {}
