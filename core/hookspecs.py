"""Hook specifications: the reference for everything a plugin can hook into.

A plugin is a module (or object) whose functions carry ``@gaf.hookimpl`` and are
named like the specifications below. Declare it in your package's entry points
under the group ``gaf``::

    [project.entry-points.gaf]
    my_plugin = "my_package.plugin"

and gaf calls its hooks. Every argument is optional in an implementation: pluggy
passes only the arguments the implementation names.

Registration hook
-----------------
:func:`gaf_register_components` runs once, when the registry first discovers
plugins, after the built-in catalogue (registry.toml) and the one-line entry points.

Training hooks
--------------
Called by :func:`gaf.train.train` in this order: :func:`gaf_train_start`, then per optimiser step
:func:`gaf_step_end`, :func:`gaf_checkpoint_saved` when a checkpoint is written,
:func:`gaf_eval_end` after an evaluation, and :func:`gaf_train_end` at the end.
Hooks observe; an exception raised in a hook stops the run.

Sampling hooks
--------------
:func:`gaf_sample_step` runs after every denoising step of a diffusion sampler
(``gaf sample --pipeline``, :class:`gaf.plugins.t2i.diffusion_pipeline.DiffusionPipeline`) and
may replace the latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry
    from .runs import RunContext

hookspec = pluggy.HookspecMarker("gaf")


@hookspec
def gaf_register_components(registry: Registry) -> None:
    """Add components to the registry.

    ``registry.add(kind, name, target, summary=...)`` with ``target`` a
    ``"module:attr"`` string (imported only when the component is used) or the
    object itself. Names must be new unless ``replace=True`` is passed.
    """


@hookspec
def gaf_train_start(ctx: RunContext) -> None:
    """A run is about to take its first step (``ctx.run_dir`` exists, config written)."""


@hookspec
def gaf_step_end(ctx: RunContext, step: int, metrics: dict[str, float]) -> None:
    """Optimiser step ``step`` (1-based) finished; ``metrics`` holds this step's values
    (loss, lr, grad_norm and the objective's own metrics)."""


@hookspec
def gaf_eval_end(ctx: RunContext, step: int, metrics: dict[str, float]) -> None:
    """An evaluation at step ``step`` finished with ``metrics``."""


@hookspec
def gaf_checkpoint_saved(ctx: RunContext, step: int, path: Path) -> None:
    """A checkpoint for step ``step`` was written (atomically) to directory ``path``."""


@hookspec
def gaf_train_end(ctx: RunContext, summary: dict[str, Any]) -> None:
    """The run finished; ``summary`` is what was written to ``summary.json``."""


@hookspec(firstresult=True)
def gaf_sample_step(step: int, timestep: int, latents: Any) -> Any:
    """A diffusion sampler finished denoising step ``step`` (0-based) at ``timestep``.

    ``latents`` is the ``(B, C, H, W)`` sample after the step. Return a tensor of the
    same shape to replace it (e.g. to paste known pixels back for inpainting), or
    ``None`` to leave it. The first implementation that returns a tensor wins; a
    pipeline's own ``callback=`` argument runs after the hook.
    """
