"""The component interfaces: each docstring is the contract a plugin must meet.

Interfaces are :class:`typing.Protocol` classes (runtime-checkable where the check is
meaningful), so a plugin needs no base class: it only has to provide the members
named here. This module does not import torch; tensor types are named in strings.

Language-model side (implemented by the built-in plugins today):

* :class:`Tokenizer`, :class:`Policy` (and :class:`RolloutPolicy`), :class:`Sampler`,
  :class:`RewardFn`, :class:`Task`, :class:`Objective`, :class:`PreferenceObjective`;
* data: :class:`SFTExample`, :class:`PreferenceGroup`, :class:`CompletionLogProbs`,
  :class:`SequenceLogProbs`, :class:`Rollout`.

Image side:

* :class:`Dataset`, :class:`Scheduler`, :class:`Autoencoder`, :class:`Metric`,
  :class:`NoiseModel`, :class:`Conditioner` (implemented by the built-in plugins).

The package is split by side: :mod:`gaf.interfaces.data` (data classes, ``batched``),
:mod:`gaf.interfaces.lm`, :mod:`gaf.interfaces.images` and
:mod:`gaf.interfaces.training`; every public name is re-exported here.
"""

from __future__ import annotations

from .data import (
    CompletionLogProbs,
    PreferenceGroup,
    Rollout,
    SequenceLogProbs,
    SFTExample,
    batched,
)
from .images import (Autoencoder, Conditioner, Dataset, Metric, NoiseModel, NoiseSchedule,
                     Scheduler)
from .lm import Policy, RewardFn, RolloutPolicy, Sampler, Task, Tokenizer
from .training import Objective, ObjectiveBase, PreferenceObjective, objective_member

__all__ = [
    "Autoencoder", "CompletionLogProbs", "Conditioner", "Dataset", "Metric", "NoiseModel",
    "NoiseSchedule",
    "Objective", "ObjectiveBase", "objective_member", "Policy", "PreferenceGroup", "PreferenceObjective", "RewardFn", "Rollout",
    "RolloutPolicy", "SFTExample", "Sampler", "Scheduler", "SequenceLogProbs", "Task",
    "Tokenizer", "batched",
]
