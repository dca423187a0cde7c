"""Training contracts: :class:`Objective` and :class:`PreferenceObjective`.

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .data import SequenceLogProbs

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor

    from ..runs import RunContext


__all__ = ["OBJECTIVE_DEFAULTS", "Objective", "ObjectiveBase", "PreferenceObjective",
           "objective_member"]


@runtime_checkable
class Objective(Protocol):
    """A trainable recipe (``sft``, ``dpo``, ``ppo``, ``ldm`` …), driven by :func:`gaf.train.train`.

    The class usually declares ``Config`` (an attrs class: the objective's own options),
    ``uses`` (a mapping from component kind to default name: the components it
    needs, e.g. ``{"policy": "gpt2-tiny", "task": "sentiment"}``) and
    ``train_defaults`` (overrides of :class:`gaf.train.TrainConfig` defaults).
    It is built as ``Objective(config)`` (``Objective()`` without a ``Config``) and then:

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

    An objective whose modules want their own learning rate, Adam betas or weight
    decay (a GAN's two players) may define ``param_groups()``.

    The optional members (``Config``, ``uses``, ``train_defaults``, ``unit``,
    ``plot_keys``, ``param_groups`` and the three methods above) are declared one by one, with their defaults, on
    :class:`ObjectiveBase`: that is their reference. The core reads them through
    :func:`objective_member` only, so an objective need not derive from it.
    """

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


class ObjectiveBase:
    """Optional base class of an :class:`Objective`, and the reference for its optional
    members: each is declared and documented below, as pluggy documents its hook
    specifications (what it is, when the core reads or calls it, its default).

    The core reads every one of them through :func:`objective_member`, which falls back
    to the value declared here (:data:`OBJECTIVE_DEFAULTS`), so an objective that does
    not derive from this class works the same. A subclass overrides what it declares;
    put this class last among its bases.
    """

    Config: ClassVar[type | None] = None
    """The objective's options: an attrs class (fields made with :func:`gaf.config.option`)
    built from the run file's ``[objective]`` section and ``--set objective.*`` and
    passed to the constructor, ``Objective(config)``; ``gaf show objective NAME`` lists
    its fields. Default: None, an objective without options, built as ``Objective()``."""

    uses: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """The components the objective needs, kind → default name, e.g.
    ``{"policy": "gpt2-tiny", "task": "sentiment"}``. Read when a run spec is resolved
    (each kind gets a ``[<kind>]`` section defaulting to that name, which ``--<kind>``
    overrides) and by ``gaf show objective NAME``. Default: none."""

    component_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    """Options of the ``uses`` components that differ for this objective, kind →
    ``{option: value}``, e.g. ``{"sampler": {"k": 8}}`` (the image-token models sample
    with a smaller top-k than a language model). Applied only while the kind's
    component is the ``uses`` default (another component's options are its own), below
    the run file's ``[<kind>]`` section and ``--set <kind>.*``; listed by ``gaf show
    objective NAME``. Default: none."""

    train_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Overrides of :class:`gaf.trainconfig.TrainConfig` defaults (``steps``, ``lr`` …),
    below a run file's ``[train]`` and ``--set train.*``. Default: none."""

    unit: ClassVar[str] = "examples"
    """What ``train.batch_size`` counts (``"pairs"``, ``"images"`` …), named in the
    run's log lines. Default: ``"examples"``."""

    plot_keys: ClassVar[Sequence[str] | None] = None
    """The metrics drawn in ``plots/training.png`` at the end of a run, in order.
    Default: None, every numeric metric."""

    training_state: ClassVar[Callable[[], dict[str, Any]] | None] = None
    """``def training_state(self) -> dict``: the objective's own state across steps (PPO's
    adaptive KL coefficient), JSON values, called at every checkpoint and saved in its
    ``state.json``. Default: None, nothing saved."""

    load_training_state: ClassVar[Callable[[dict[str, Any]], None] | None] = None
    """``def load_training_state(self, state: dict) -> None``: restores what
    ``training_state`` returned, called on ``--resume`` after ``setup`` when the
    checkpoint holds such a state. Default: None, not called."""

    after_step: ClassVar[Callable[[int], None] | None] = None
    """``def after_step(self, step: int) -> None``: called after every optimiser step with
    its 1-based number, for weights the optimiser does not step (the LDM's EMA copy;
    they live in modules whose parameters do not require gradients, so they are
    checkpointed but never optimised). Default: None, not called."""

    param_groups: ClassVar[Callable[[], Sequence[Mapping[str, Any]]] | None] = None
    """``def param_groups(self) -> list[dict]``: per-module optimiser settings, called once
    by :func:`gaf.train.train` after ``setup`` (and after ``modules()``). Each entry is
    ``{"params": <a name from modules()> or a list of parameters, "lr": float,
    "betas": (b1, b2), "weight_decay": float}``, every key but ``params`` optional: an
    unspecified one takes the ``[train]`` value (``train.lr`` …). The learning-rate
    schedule (warm-up, decay) scales each group's own peak ``lr``; clipping stays by
    the global norm over all groups. Every trainable parameter of ``modules()`` must be
    in exactly one group (checked, with unknown keys and bad values, by
    :func:`gaf.train.resolve_param_groups`: a :class:`~gaf.errors.BadConfig` naming the
    parameter); ``betas`` needs ``train.optimizer`` adam or adamw. The groups are part of
    the checkpointed optimiser state, so they must be the same on resume. Default:
    None, one group of every trainable parameter with the ``[train]`` settings."""


#: The optional :class:`Objective` members and the values the core assumes when an
#: objective lacks one: those :class:`ObjectiveBase` declares. None for a method means
#: "not called".
OBJECTIVE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {name: getattr(ObjectiveBase, name) for name in ObjectiveBase.__annotations__})


def objective_member(obj: Any, name: str) -> Any:
    """The optional :class:`Objective` member ``name`` of ``obj`` (an objective or its
    class), or its default from :data:`OBJECTIVE_DEFAULTS`: the one place the core
    looks these members up. ``name`` must be one of them (a ``KeyError`` otherwise)."""
    return getattr(obj, name, OBJECTIVE_DEFAULTS[name])
