"""Image side contracts: :class:`Dataset`, :class:`Autoencoder`, :class:`Conditioner`,
:class:`NoiseModel`, :class:`NoiseSchedule`, :class:`Scheduler`, :class:`Metric`, and
:class:`Pipeline` (a trained text-to-image run as a sampler, whatever its method).

Part of :mod:`gaf.interfaces` (which re-exports every name here); no torch at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor


__all__ = ["Autoencoder", "Conditioner", "Dataset", "Metric", "NoiseModel", "NoiseSchedule",
           "Pipeline", "Scheduler"]


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset: ``len(ds)`` and ``ds[i] -> dict`` (e.g. ``{"image", "caption"}``).

    Images are float tensors ``(C, H, W)`` in ``[-1, 1]``. Deterministic per seed.
    """

    #: classes of ``item["label"]`` (0 when the items carry no label)
    num_classes: int
    #: a name per class (empty when there are none)
    class_names: Sequence[str]
    #: image height and width
    resolution: int
    #: image channels
    channels: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class Autoencoder(Protocol):
    """An image first stage: ``encode(x) -> z`` and ``decode(z) -> x``.

    ``x`` is ``(B, C, H, W)`` in ``[-1, 1]``; ``z`` is ``(B, c, H/f, W/f)``.
    ``scale_factor`` multiplies latents before diffusion (unit variance on the data)
    and is stored with the checkpoint.
    """

    scale_factor: float

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class Conditioner(Protocol):
    """Turns conditions (captions, labels) into token states for cross-attention.

    * ``__call__(conditions) -> Tensor`` of shape ``(B, tokens, width)``, one row per
      condition (a caption string for ``text-transformer``, an int label for ``class``);
      a condition it cannot encode (a prompt longer than its context, an unknown
      label) raises :class:`~gaf.errors.BadData` naming it.
    * ``null(batch_size) -> Tensor`` ``(batch_size, tokens, width)``: the
      unconditional embedding that classifier-free guidance uses, and that training
      substitutes for a dropped condition. It does not depend on any condition.
    * ``condition_key``: the dataset item field it reads (``"caption"``, ``"label"``).
    * ``tokens`` and ``width``: the shape of one condition's states (``width`` must equal
      the noise model's ``context_dim``).
    * ``trainable``: True when it is trained jointly with the noise model (the LDM
      recipe); a frozen pretrained encoder says False and the objective leaves it be.
    """

    condition_key: str
    tokens: int
    width: int
    trainable: bool

    def __call__(self, conditions: Sequence[Any]) -> Tensor: ...

    def null(self, batch_size: int) -> Tensor: ...


@runtime_checkable
class NoiseModel(Protocol):
    """Predicts the diffusion target (ε, v or x0) from ``(x_t, t, context)``.

    ``__call__(x_t (B,C,H,W), t, context=None, *, labels=None) -> (B,C,H,W)``, where
    ``t`` is a ``(B,)`` tensor or one timestep for the whole batch (an int or a 0-d
    tensor) and ``context`` is the conditioner's ``(B, L, D)`` states, or ``None`` for
    a model without cross-attention. ``labels`` ``(B,)`` are class labels for a model
    with a class embedding. ``prediction_type`` names what it predicts
    (``"epsilon"``, ``"v_prediction"`` or ``"sample"``: the scheduler's names), and
    ``in_channels`` the channels of ``x_t``.

    Optional: ``cache_context(context) -> object``, accepted in place of ``context`` and
    giving the same output, lets a sampler compute the context's cross-attention keys
    and values once instead of at every step.
    """

    prediction_type: str
    in_channels: int

    def __call__(self, x_t: Tensor, t: Any, context: Any = None, *,
                 labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class NoiseSchedule(Protocol):
    """The forward process of a diffusion model (what training needs).

    * ``add_noise(x0, noise, t)`` gives ``x_t`` = √ᾱ_t·x0 + √(1−ᾱ_t)·noise;
    * ``velocity(x0, noise, t)`` the v-target √ᾱ_t·noise − √(1−ᾱ_t)·x0;
    * ``training_target(x0, noise, t)`` what the model regresses onto for the
      config's ``prediction_type`` (noise, v or x0).

    ``t`` broadcasts over the batch as in diffusers (an int, or a tensor of 1 or B
    timesteps of any shape: 0-d, ``(1,)``, ``(B,)``, ``(B, 1)``). The reference
    implementation is ``gaf.plugins.diffusion.NoiseSchedule``.
    """

    def add_noise(self, x0: Tensor, noise: Tensor, t: Any) -> Tensor: ...

    def velocity(self, x0: Tensor, noise: Tensor, t: Any) -> Tensor: ...

    def training_target(self, x0: Tensor, noise: Tensor, t: Any) -> Tensor: ...


@runtime_checkable
class Scheduler(NoiseSchedule, Protocol):
    """A :class:`NoiseSchedule` plus a sampler (diffusers' field names and semantics).

    The reference implementation is ``gaf.plugins.diffusion.SchedulerBase``: a third-party
    sampler subclasses it and writes ``step`` (the DPM-Solver example). All members
    below are required; callers use them directly.

    * ``set_timesteps(n)`` fixes ``timesteps``: ``n`` strictly decreasing ints.
    * ``step(model_output, t, sample, *, generator=None) -> Tensor`` returns the
      sample at the entry of ``timesteps`` after ``t`` (past the end after the last).
      There is no hidden step counter: the previous timestep is looked up in
      ``timesteps``, so one scheduler can serve several threads.
    * ``new_state()`` gives one sampling run's memory: a sampler calls it once per run
      and, when it is not None, passes it as ``step(..., state=state)``. A stateless
      sampler returns None (``SchedulerBase``'s default) and its ``step`` need not
      accept ``state``; a multistep solver returns a fresh object (a dict) and keeps its
      history (earlier model outputs) there, not on itself, so it stays shareable.
      Required by this contract (a scheduler that does not subclass ``SchedulerBase``
      defines it, returning None if stateless); gaf's pipeline still tolerates its
      absence in older schedulers.
    * ``from_config(config, **overrides)`` (a classmethod) builds one from another
      scheduler's saved config (an attrs config or a mapping), ignoring fields it does
      not know: a run trained with ``ddpm`` samples with any scheduler. ``config`` is
      the scheduler's own attrs config.

    Optional members, used by samplers when present (diffusers' names):

    * ``init_noise_sigma`` (float, default 1): the scale of the initial noise;
    * ``scale_model_input(sample, t) -> Tensor``: what the noise model sees at ``t``.
    """

    timesteps: Any

    def set_timesteps(self, num_inference_steps: int) -> None: ...

    def step(self, model_output: Tensor, t: int, sample: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor: ...

    def new_state(self) -> Any: ...

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Scheduler: ...


@runtime_checkable
class Metric(Protocol):
    """A metric: ``__call__(*inputs) -> dict[str, float]`` (one or more named values)."""

    def __call__(self, *inputs: Any) -> dict[str, float]: ...


@runtime_checkable
class Pipeline(Protocol):
    """Samples images from a trained text-to-image run (registry kind ``pipeline``).

    Every text-to-image objective names the pipeline that samples its runs in
    ``RUN_DIR/pipeline.json`` (``"pipeline": "diffusion"``; a file without the key
    means ``diffusion``), and ``gaf sample --pipeline RUN_DIR`` builds it through the
    registry, whatever the method (diffusion, a token model, a GAN …).

    * ``Options``: the attrs class of the call's options (steps, guidance,
      temperature, top-k …), each with a default and help text (``gaf.config.option``);
      ``gaf show pipeline NAME`` lists them, ``gaf sample --option KEY=VALUE`` sets them.
    * ``from_run(run_dir, *, device="cpu", **load_options)`` (a classmethod) loads the
      run's trained modules onto ``device``; load options are what is fixed once per
      pipeline (for diffusion: the sampling ``scheduler``, ``scheduler_options`` and
      ``ema``). A directory that is not such a run raises
      :class:`~gaf.errors.BadConfig` naming it.
    * ``__call__(conditions, *, generators=None, seed=0, **options)`` returns
      ``(B, C, H, W)`` images in ``[-1, 1]``, one per condition (a caption or a class
      label now; an image and a mask later). Image ``i`` draws only from
      ``generators[i]`` (default: generators seeded ``seed + i``), so it does not
      depend on the batch. ``options`` are the fields of ``Options`` (an unknown one
      raises :class:`~gaf.errors.BadConfig`).
    * optional, for ``gaf sample --image``: ``variations(images, *, seed=0,
      generators=None, **options)``, new images from ``(B, C, H, W)`` pictures in
      ``[-1, 1]`` (unCLIP decodes their CLIP image embedding), with ``image_shape``,
      the ``(C, H, W)`` it takes.
    * optional, for ``gaf sample --image … [--mask …] [--prompt …]``: ``edit(images, *,
      masks=None, conditions=None, seed=0, generators=None, **options)``, images made
      from pictures, masks ``(B, 1, H, W)`` of exact 0s and 1s (**1 = generate**) and
      captions (``None``: none), whose known pixels are the pictures'; with
      ``image_shape``, ``uses_masks`` (whether it needs masks), ``EditOptions`` (the
      attrs class of ``edit``'s options, when they differ from ``Options``) and
      ``needs_image = True`` when it cannot sample from a prompt alone (the
      ``image-to-image`` pipeline; the ``diffusion`` pipeline edits with RePaint).
    * ``evaluations_per_image(**options) -> float``: network evaluations to make one
      image at these options. For diffusion: denoiser calls, a classifier-free
      guidance pair counting 2, plus the first-stage decode and the condition
      encoder once each.
    """

    #: attrs class of the call's options, each with a default and help text
    Options: type

    @classmethod
    def from_run(cls, run_dir: Any, *, device: Any = "cpu", **load_options: Any) -> Pipeline: ...

    def __call__(self, conditions: Sequence[Any], *, generators: Sequence[Any] | None = None,
                 seed: int = 0, **options: Any) -> Any: ...

    def evaluations_per_image(self, **options: Any) -> float: ...
