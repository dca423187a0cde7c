"""A run as objectives see it: its context and the layout of its directory.

:class:`RunContext` is what an objective's ``setup``/``evaluate`` receive (plugins
import it from here); :func:`new_run_dir`, :func:`write_config` and the ``latest``
symlink helpers lay out the directory. Starting, continuing and evaluating runs is
:mod:`gaf.launch`, which imports this module (never the other way round).

Layout of ``runs/<date>-<objective>-<id>/``:

``.lock``
    held (``flock``) by the ``gaf`` process writing the run (:func:`gaf.launch.run_lock`).
``config.toml``
    the fully resolved run; ``gaf run --config RUN_DIR/config.toml`` reproduces it.
``metrics.jsonl``
    one JSON object per logged step.
``summary.json``
    final metrics, throughput, wall time, versions, status.
``checkpoints/``
    atomic training checkpoints (safetensors) and ``latest.json``; ``--resume``
    continues from the newest.
``<module>/``
    each trained module exported as a component (``gaf.json`` + ``model.safetensors``),
    e.g. ``policy/``, so ``--policy RUN_DIR`` and ``gaf.load("policy", RUN_DIR)`` work.
``sft/``, ``data/``
    DPO-family runs only: the SFT stage (a run directory of its own) and the sampled,
    labelled preference data that ``--resume`` reuses.
``samples/``, ``plots/``
    samples written by the objective's evaluation, PNG training curves.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as _config
from . import seeding
from .atomic import atomic_write_text
from .components import create_or_load
from .errors import GafError
from .hooks import plugin_manager
from .registry import REGISTRY, Registry
from .spec import RunSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class RunContext:
    """What an objective sees of its run: spec, directory, device, components, named
    random streams (:meth:`rng`, :meth:`generator`)."""

    def __init__(self, spec: RunSpec, run_dir: Path, *, registry: Registry = REGISTRY,
                 console: Any = None):
        from .device import resolve_device
        from .distributed import current_world

        self.spec = spec
        self.run_dir = Path(run_dir)
        self.registry = registry
        self.device: torch.device = resolve_device(spec.device)
        #: this process's rank and the number of processes (1 outside torchrun)
        self.world = current_world(self.device)
        if self.world.enabled and self.device.type == "cuda":
            import torch

            self.device = torch.device("cuda", self.world.local_rank)
        self.console = console if self.world.is_main else None
        self.hook = plugin_manager().hook
        self._components: dict[str, Any] = {}

    def component(self, kind: str) -> Any:
        """The run's ``kind`` component (built once; modules moved to the run's device)."""
        if kind not in self._components:
            if kind not in self.spec.components:
                raise GafError(f"objective {self.spec.objective!r} did not declare a {kind} "
                               f"in its 'uses'")
            comp = self.spec.components[kind]
            obj = create_or_load(self.registry, kind, comp.name, **comp.options)
            if hasattr(obj, "to") and hasattr(obj, "parameters"):
                obj = obj.to(self.device)
            self._components[kind] = obj
        return self._components[kind]

    def rng(self, name: str, *keys: int) -> np.random.Generator:
        """A numpy ``Generator`` on the run's random stream ``name`` at ``keys``.

        ``name`` says what the draws are for (``"ppo-minibatches"``), ``keys`` where in
        the run they are drawn (rollout, epoch, rank): the same ``(seed, name, keys)``
        gives the same draws in any process, so a resumed run draws what the
        uninterrupted one would have. See :mod:`gaf.seeding`.
        """
        return seeding.rng(self.spec.seed, name, *keys)

    def generator(self, name: str, *keys: int, device: Any = None) -> torch.Generator:
        """A ``torch.Generator`` on ``device`` (default: the run's) seeded from the run's
        random stream ``name`` at ``keys``: ``ctx.generator("rollouts", draw, rank)``.
        See :meth:`rng` and :mod:`gaf.seeding`."""
        return seeding.torch_generator(self.spec.seed, name, *keys,
                                       device=self.device if device is None else device)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        from .device import autocast

        return autocast(self.device, self.spec.train.precision)

    def path(self, *parts: str) -> Path:
        """A path inside the run directory (its parent directory is created)."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)


def new_run_dir(spec: RunSpec) -> Path:
    """``<out_dir>/<date>-<objective>-<id>`` (or ``<out_dir>/<name>``), created fresh."""
    name = spec.name or (f"{datetime.date.today().isoformat()}-{spec.objective}-"
                         f"{secrets.token_hex(3)}")
    path = Path(spec.out_dir) / name
    if path.exists() and any(path.iterdir()):
        raise GafError(f"run directory {path} already exists; pick another name or "
                       f"continue it with --resume {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GafError(f"cannot create the run directory {path}: {exc.strerror}") from None
    _point_latest(path)
    return path


def _point_latest(run_dir: Path) -> None:
    """Make ``<out_dir>/latest`` a symlink to the newest run (best effort)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{secrets.token_hex(4)}"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            tmp.unlink()
            return
        tmp.replace(link)
    except OSError:
        tmp.unlink(missing_ok=True)


def write_config(spec: RunSpec, run_dir: Path) -> Path:
    """Write ``spec`` to ``run_dir/config.toml``, which ``gaf run --config`` reproduces."""
    path = run_dir / "config.toml"
    atomic_write_text(path, "# gaf run config: feed back with `gaf run --config` to reproduce\n"
                      + _config.dumps_toml(spec.to_dict()))
    return path
