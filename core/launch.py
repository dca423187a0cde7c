"""Launching runs: from a resolved :class:`~gaf.spec.RunSpec` to a trained run directory.

:func:`execute` is what ``gaf run`` and :func:`gaf.run` do: build the objective
(:func:`build_objective`), create the run directory (or take the one given to
continue), write ``config.toml``, make the :class:`~gaf.runs.RunContext` and hand both
to the training loop (:func:`gaf.train.train`). :func:`load_run_spec` reads an
existing run back for ``--resume``; :func:`train_stage` trains an earlier stage of a
run as a run of its own (the DPO family's SFT stage, ``ldm``'s autoencoder);
:func:`evaluate_run` re-runs a finished run's evaluation (``gaf eval RUN_DIR``).

This module is the top of the run machinery: it imports :mod:`gaf.runs` (the context
and directory layout that objectives see) and :mod:`gaf.train`, and nothing below it
imports it. Plugins import it only for :func:`train_stage`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import checkpoint
from . import config as _config
from .atomic import atomic_write_text, load_state, load_tensors
from .components import WEIGHTS_FILE
from .device import resolve_device
from .distributed import current_world
from .errors import BadConfig, GafError, Interrupted
from .registry import REGISTRY, Registry
from .runs import RunContext, new_run_dir, point_latest_to_newest, write_config
from .spec import RunSpec, resolve
from .train import train as run_training

__all__ = ["build_objective", "load_run_spec", "execute", "train_stage", "evaluate_run"]


def build_objective(spec: RunSpec, registry: Registry = REGISTRY) -> Any:
    """The objective ``spec`` names, built with its resolved config (if it has one)."""
    obj_cls = registry.get("objective", spec.objective)
    return obj_cls(spec.objective_config) if spec.objective_config is not None else obj_cls()


def load_run_spec(run_dir: Path, sets: tuple[str, ...] = (),
                  registry: Registry = REGISTRY) -> RunSpec:
    """The spec of an existing run (for ``--resume``), with optional ``--set`` changes."""
    cfg = run_dir / "config.toml"
    if not cfg.is_file():
        raise GafError(f"cannot resume {run_dir}: it has no config.toml")
    return resolve(_config.read_toml(cfg), sets=sets, registry=registry, where=str(cfg))


def execute(spec: RunSpec, *, resume: Path | None = None, registry: Registry = REGISTRY,
            console: Any = None) -> tuple[Path, dict[str, Any]]:
    """Run ``spec`` (or continue the run in ``resume``); returns (run_dir, summary)."""
    device = resolve_device(spec.device)  # fail before creating anything
    world = current_world(device)
    objective = build_objective(spec, registry)
    if resume is not None:
        run_dir = Path(resume)
    else:  # rank 0 names and creates the directory; the other ranks use the same one
        run_dir = Path(world.broadcast(str(new_run_dir(spec)) if world.is_main else None))
    if world.is_main:
        write_config(spec, run_dir)  # on resume this records any --set changes
    ctx = RunContext(spec, run_dir, registry=registry, console=console)
    try:
        summary = run_training(objective, ctx, resume=resume is not None)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue with: gaf run --resume {run_dir}") from None
    except GafError:
        if world.is_main and resume is None and not (run_dir / "metrics.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no stub behind
            point_latest_to_newest(run_dir.parent)
        raise
    return run_dir, summary


def train_stage(ctx: RunContext, stage_dir: Path, objective: str, kinds: tuple[str, ...],
                train: dict[str, Any], *, label: str,
                components: dict[str, dict[str, Any]] | None = None) -> None:
    """Train an earlier stage of ``ctx``'s run as a run of its own in ``stage_dir``.

    The stage uses ``objective`` with ``ctx``'s seed, device, progress setting and
    components of the given ``kinds`` (same names and options), and ``train`` as its
    ``[train]`` section (``parallel`` follows the outer run). A stage directory that
    already has checkpoints is resumed, so a resumed outer run finishes it.
    ``components`` adds sections of kinds the outer run does not have (``{"encoder":
    {"name": "clip", "resolution": 28}}``). Used by the DPO family (the SFT stage),
    ``ldm`` (the autoencoder stage) and ``gan-int-cls`` (the CLIP stage).
    """
    spec = ctx.spec
    data: dict[str, Any] = {k: getattr(spec, k) for k in ("seed", "device", "progress")}
    for kind in kinds:
        comp = spec.components[kind]
        data[kind] = {"name": comp.name, **comp.options}
    data.update({kind: dict(section) for kind, section in (components or {}).items()})
    data["train"] = {**train, "parallel": spec.train.parallel}
    sub = resolve(data, objective=objective, registry=ctx.registry, where=label)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if ctx.world.is_main:
        write_config(sub, stage_dir)
    stage = build_objective(sub, ctx.registry)
    sub_ctx = RunContext(sub, stage_dir, registry=ctx.registry, console=ctx.console)
    run_training(stage, sub_ctx, resume=(stage_dir / "checkpoints").is_dir())


def evaluate_run(run_dir: str | Path, sets: tuple[str, ...] = (), *, device: str | None = None,
                 registry: Registry = REGISTRY, console: Any = None) -> dict[str, Any]:
    """Re-run a finished run's evaluation on its saved model (``gaf eval RUN_DIR``).

    Rebuilds the run's objective from ``RUN_DIR/config.toml`` (``sets`` change its
    options, ``device`` where it runs), loads the trained weights (the exported
    ``RUN_DIR/<module>/`` components, else the newest checkpoint), runs the objective's
    evaluation and writes the metrics to ``RUN_DIR/eval.json``; returns them.
    """
    path = Path(run_dir)
    if not (path / "config.toml").is_file():
        raise BadConfig(f"{run_dir} is not a run directory (it has no config.toml)")
    import torch

    spec = load_run_spec(path, sets, registry)
    if device:
        spec.device = device
    objective = build_objective(spec, registry)
    ctx = RunContext(spec, path, registry=registry, console=console)
    torch.manual_seed(spec.seed)
    objective.setup(ctx)
    modules = dict(objective.modules())
    latest = checkpoint.latest_checkpoint(path / "checkpoints")
    if latest is not None:
        checkpoint.load_module_weights(latest, modules)
    exported = [n for n in modules if (path / n / WEIGHTS_FILE).is_file()]
    for name in exported:  # the exported components win (they may hold more, e.g. a scale)
        weights = path / name / WEIGHTS_FILE
        load_state(modules[name], load_tensors(weights), where=str(weights))
    if latest is None and not exported:
        raise BadConfig(f"{run_dir} has no trained weights (no checkpoint and no exported "
                        f"module directory); did the run finish?")
    for mod in modules.values():
        mod.eval()
    with torch.no_grad():
        metrics = objective.evaluate(ctx) or {}
    atomic_write_text(path / "eval.json", json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics
