"""Training contracts: :class:`Objective` and :class:`PreferenceObjective`.

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .data import SequenceLogProbs

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor

    from ..runs import RunContext


@runtime_checkable
class Objective(Protocol):
    """A trainable recipe (``sft``, ``dpo``, ``ppo``, ``ldm`` …), driven by :func:`gaf.train.train`.

    The class declares ``Config`` (an attrs class: the objective's own options),
    ``uses`` (a mapping from component kind to default name: the components it
    needs, e.g. ``{"policy": "gpt2-tiny", "task": "sentiment"}``) and
    ``train_defaults`` (overrides of :class:`gaf.train.TrainConfig` defaults).
    It is built as ``Objective(config)`` and then:

    1. ``setup(ctx)`` builds models and data through ``ctx.component(kind)``;
    2. ``modules()`` returns the ``nn.Module`` objects to optimise and checkpoint,
       by name (each is exported to ``RUN_DIR/<name>/`` at the end);
    3. ``train_batch(index)`` returns micro-batch number ``index``. It must be a pure
       function of ``index`` and the seed, so that runs resume exactly;
    4. ``loss(batch)`` returns ``(scalar loss, {metric: float})``;
    5. ``evaluate(ctx)`` runs the final evaluation, may write samples into the run
       directory and returns metrics for ``summary.json``.

    An objective that carries state of its own across steps (PPO's adaptive KL
    coefficient) may also define ``training_state() -> dict`` (JSON values, saved in
    every checkpoint's ``state.json``) and ``load_training_state(dict)`` (called on
    resume, after ``setup``). An objective that keeps weights the optimiser does not
    step (an EMA copy) may define ``after_step(step)``, called after every optimiser
    step with its 1-based number; such weights live in modules whose parameters do
    not require gradients, so they are checkpointed but never optimised.

    Optional members and their defaults are :data:`OBJECTIVE_DEFAULTS` (read through
    :func:`objective_member`; :class:`ObjectiveBase` carries them as class attributes):
    ``uses`` and ``train_defaults`` (empty), ``unit`` (what ``train.batch_size`` counts,
    for the logs: ``"examples"``), ``plot_keys`` (the metrics plotted at the end;
    ``None`` = all), and the three hooks above (absent = not called).
    """

    #: the objective's options, an attrs class built from ``[objective]`` / ``--set``
    Config: type

    def setup(self, ctx: RunContext) -> None: ...

    def modules(self) -> Mapping[str, Any]: ...

    def train_batch(self, index: int) -> Any: ...

    def loss(self, batch: Any) -> tuple[Tensor, dict[str, float]]: ...

    def evaluate(self, ctx: RunContext) -> dict[str, float]: ...


@runtime_checkable
class PreferenceObjective(Objective, Protocol):
    """An :class:`Objective` trained on preferences, written only in terms of scores.

    The DPO family (``dpo``, ``cdpo``, ``robust``, ``ipo``, ``hinge``, ``simpo``,
    ``orpo``, ``kto``, ``ranking-dpo``) implements it, and so must any objective that
    learns from preferred and dispreferred outputs (Diffusion-DPO will, with a
    denoising error in place of a log-probability). Beyond the :class:`Objective`
    members it provides:

    * ``beta``: the strength of the implicit KL penalty, the scale of the implicit
      reward;
    * ``reference_free``: True when the loss needs no frozen reference model (then
      every ``ref`` argument below is ``None``);
    * ``implicit_reward(policy, ref) -> (B,)``: the reward the objective trains
      implicitly from the policy's and the reference's scores of the same outputs,
      ``β·(log π − log π_ref)`` for DPO; logged as ``rewards/*`` and used to rank
      held-out pairs;
    * ``batch_loss(batch, policy, ref) -> (loss, metrics)``: the mean loss of a batch of
      preference units (pairs, rankings or labelled single outputs: the objective's
      ``unit``) from the scores of their outputs.

    Scores are :class:`SequenceLogProbs` (a sum and a count per output): nothing here
    assumes tokens, so any model that can answer "score these outputs" can be trained
    by the same objective. Pairwise members also define ``pair_loss(chosen, rejected,
    ref_chosen, ref_rejected) -> (B,)``, the per-pair loss ``batch_loss`` averages.
    """

    reference_free: bool
    beta: float

    def implicit_reward(self, policy: SequenceLogProbs,
                        ref: SequenceLogProbs | None) -> Tensor: ...

    def batch_loss(self, batch: Any, policy: SequenceLogProbs,
                   ref: SequenceLogProbs | None) -> tuple[Tensor, dict[str, float]]: ...


#: The optional members of an :class:`Objective` and what the core assumes when one is
#: missing: ``uses``/``train_defaults`` nothing, ``unit`` "examples" (what the progress
#: line counts), ``plot_keys`` None (plot every numeric metric), and None for the
#: optional methods ``training_state``, ``load_training_state``, ``after_step`` (not
#: called). Objectives that define none of them still work.
OBJECTIVE_DEFAULTS: dict[str, Any] = {
    "uses": {}, "train_defaults": {}, "unit": "examples", "plot_keys": None,
    "training_state": None, "load_training_state": None, "after_step": None,
}


def objective_member(obj: Any, name: str) -> Any:
    """The optional :class:`Objective` member ``name`` of ``obj`` (an objective or its
    class), or its default from :data:`OBJECTIVE_DEFAULTS`: the one place the core
    looks these members up."""
    return getattr(obj, name, OBJECTIVE_DEFAULTS[name])


class ObjectiveBase:
    """Optional base class of an :class:`Objective` with the defaults of
    :data:`OBJECTIVE_DEFAULTS` as class attributes (subclasses override what they
    declare). Objectives that do not derive from it work the same: the core reads
    these members through :func:`objective_member`."""

    uses: Mapping[str, str] = {}
    train_defaults: Mapping[str, Any] = {}
    unit: str = "examples"
    plot_keys: Any = None
