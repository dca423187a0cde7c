"""The component interfaces: each docstring is the contract a plugin must meet.

Interfaces are :class:`typing.Protocol` classes (runtime-checkable), so a plugin needs
no base class: it only has to provide the members named here. Nothing here imports
torch; tensor types are named in strings. The package is split by side, and every
public name is re-exported here (import them from ``gaf.interfaces``):

* :mod:`.lm`: :class:`Tokenizer`, :class:`Sampler`, :class:`Policy` (and
  :class:`RolloutPolicy`), :class:`RewardFn`, :class:`Task`;
* :mod:`.images`: :class:`Dataset`, :class:`Autoencoder`, :class:`Conditioner`,
  :class:`NoiseModel`, :class:`NoiseSchedule`, :class:`Scheduler` (a noise schedule
  plus a sampler), :class:`Metric`, :class:`Pipeline` (a trained text-to-image run
  that samples images: registry kind ``pipeline``);
* :mod:`.t2i`: the text-to-image systems beyond latent diffusion, :class:`TokenModel`
  (DALL-E, Parti), :class:`Prior` (unCLIP), :class:`ImageTextEncoder` (CLIP),
  :class:`GANGenerator` and :class:`GANDiscriminator` (the text-conditional GAN),
  :class:`StyleFeatures` and :class:`Stylizer` (style transfer);
* :mod:`.loading`: :class:`Loader` (a reader of a foreign checkpoint format for
  :func:`gaf.load`);
* :mod:`.training`: :class:`Objective`, :class:`PreferenceObjective`; the optional
  members of an objective are declared, with their defaults, on :class:`ObjectiveBase`
  and read by the core through :func:`objective_member`;
* :mod:`.data`: the data classes :class:`SFTExample`, :class:`PreferenceGroup`,
  :class:`CompletionLogProbs`, :class:`SequenceLogProbs`, :class:`Rollout`, and the
  helper :func:`batched`.
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
from .images import (
    Autoencoder,
    Conditioner,
    Dataset,
    Metric,
    NoiseModel,
    NoiseSchedule,
    Pipeline,
    Scheduler,
)
from .lm import Policy, RewardFn, RolloutPolicy, Sampler, Task, Tokenizer
from .loading import Loader
from .t2i import (
    GANDiscriminator,
    GANGenerator,
    ImageTextEncoder,
    Prior,
    StyleFeatures,
    Stylizer,
    TokenModel,
)
from .training import (
    OBJECTIVE_DEFAULTS,
    Objective,
    ObjectiveBase,
    PreferenceObjective,
    objective_member,
)

__all__ = [
    # data
    "CompletionLogProbs", "PreferenceGroup", "Rollout", "SFTExample", "SequenceLogProbs",
    "batched",
    # language models
    "Policy", "RewardFn", "RolloutPolicy", "Sampler", "Task", "Tokenizer",
    # images
    "Autoencoder", "Conditioner", "Dataset", "Metric", "NoiseModel", "NoiseSchedule",
    "Pipeline", "Scheduler",
    # text-to-image systems beyond latent diffusion
    "GANDiscriminator", "GANGenerator", "ImageTextEncoder", "Prior", "StyleFeatures",
    "Stylizer", "TokenModel",
    # foreign checkpoints
    "Loader",
    # training
    "OBJECTIVE_DEFAULTS", "Objective", "ObjectiveBase", "PreferenceObjective", "objective_member",
]
