"""Launching runs: from a resolved :class:`~gaf.spec.RunSpec` to a trained run directory.

:func:`execute` is what ``gaf run`` and :func:`gaf.run` do: build the objective
(:func:`build_objective`), create the run directory (or take the one given to
continue), write ``config.toml``, make the :class:`~gaf.runs.RunContext` and hand both
to the training loop (:func:`gaf.train.train`). :func:`load_run_spec` reads an
existing run back for ``--resume``; :func:`train_stage` trains an earlier stage of a
run as a run of its own (the DPO family's SFT stage, ``ldm``'s autoencoder);
:func:`evaluate_run` re-runs a finished run's evaluation (``gaf eval RUN_DIR``) on the
objective :func:`open_run` rebuilds with its trained weights (which tools that read a
finished run use too).

This module is the top of the run machinery: it imports :mod:`gaf.runs` (the context
and directory layout that objectives see) and :mod:`gaf.train`, and nothing below it
imports it. Plugins import it only for :func:`train_stage`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import checkpoint
from . import config as _config
from .atomic import atomic_write_text, load_state, load_tensors, read_json
from .components import WEIGHTS_FILE
from .device import resolve_device
from .distributed import current_world
from .errors import BadConfig, GafError, Interrupted
from .registry import REGISTRY, Registry
from .runs import RunContext, new_run_dir, write_config
from .spec import RunSpec, resolve
from .train import train as run_training

__all__ = ["build_objective", "load_run_spec", "execute", "train_stage", "evaluate_run"]


def build_objective(spec: RunSpec, registry: Registry = REGISTRY) -> Any:
    """The objective ``spec`` names, built with its resolved config (if it has one)."""
    obj_cls = registry.get("objective", spec.objective)
    return obj_cls(spec.objective_config) if spec.objective_config is not None else obj_cls()


def load_run_spec(run_dir: Path, sets: tuple[str, ...] = (),
                  registry: Registry = REGISTRY) -> RunSpec:
    """The spec of an existing run (for ``--resume``), with optional ``--set`` changes.

    Only what can change on resume may be set (:data:`RESUMABLE`); anything else is a
    :class:`~gaf.errors.BadConfig`, raised before anything is written."""
    cfg = Path(run_dir) / "config.toml"
    if not Path(run_dir).is_dir():
        raise BadConfig(f"cannot resume {run_dir}: no such directory")
    if not cfg.is_file():
        raise BadConfig(f"cannot resume {run_dir}: it has no config.toml (not a run directory)")
    spec = resolve(_config.read_toml(cfg), sets=sets, registry=registry, where=str(cfg))
    resume_changes(run_dir, spec, registry)
    return spec


#: the settings a resumed run may change (``gaf run --resume RUN_DIR --set …``): the
#: length of the run, the optimiser's step sizes and the schedule, logging and saving,
#: and where it runs. Everything else is what the checkpoint was trained with.
RESUMABLE = ("train.steps", "train.lr", "train.betas", "train.weight_decay",
             "train.max_grad_norm", "train.schedule", "train.warmup_steps", "train.log_every",
             "train.save_every", "train.keep_checkpoints", "device", "progress")


def resume_changes(run_dir: Path, spec: RunSpec, registry: Registry = REGISTRY) -> list[str]:
    """What ``spec`` changes of the run saved in ``run_dir/config.toml``, as
    ``"train.lr 0.004 -> 0.1"`` lines; a change outside :data:`RESUMABLE` is a
    :class:`~gaf.errors.BadConfig` naming it and what may change."""
    cfg = Path(run_dir) / "config.toml"
    saved = _flat(resolve(_config.read_toml(cfg), registry=registry, where=str(cfg)).to_dict())
    wanted = _flat(spec.to_dict())
    changed = [k for k in {**saved, **wanted} if saved.get(k) != wanted.get(k)]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {wanted.get(k)!r})" for k in refused)
        raise BadConfig(f"cannot resume {run_dir} with {shown}: the checkpoint was trained "
                        f"with the saved value; on resume only these may change: "
                        f"{', '.join(RESUMABLE)} (start a new run to change the rest)")
    return [f"{k} {saved.get(k)!r} -> {wanted.get(k)!r}" for k in changed if k != "progress"]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def check_run_target(spec: RunSpec, nproc: int = 1) -> Path:
    """Check, before anything is created, that a new run of ``spec`` can be written:
    ``name`` is one plain directory name, ``out_dir`` is (or can become) a writable
    directory, the run directory does not exist yet (or is empty), and the batch
    splits over ``nproc`` processes. Returns the run directory it will be (its
    generated name is picked later)."""
    name = spec.name
    if name and (name in (".", "..") or Path(name).name != name or "/" in name
                 or "\\" in name):
        raise BadConfig(f"--name {name!r} must be a plain directory name (no '/' and not "
                        f"'.' or '..'): the run goes into --out {spec.out_dir!r}")
    out = Path(spec.out_dir)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadConfig(f"--out {spec.out_dir!r} cannot hold run directories: {probe} is a "
                        "file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadConfig(f"--out {spec.out_dir!r} cannot hold run directories: {probe} is not "
                        "writable")
    if name and (out / name).exists() and not ((out / name).is_dir()
                                                and not any((out / name).iterdir())):
        raise BadConfig(f"run directory {out / name} already exists; pick another name or "
                        f"continue it with --resume {out / name}")
    check_batch_split(spec, nproc)
    return out / name if name else out


def check_batch_split(spec: RunSpec, nproc: int) -> None:
    """``train.batch_size`` must split into ``nproc`` equal shares."""
    if spec.train.batch_size % max(1, nproc):
        raise BadConfig(f"train.batch_size ({spec.train.batch_size}) must be a multiple of "
                        f"the number of processes ({nproc}): every rank trains an equal share")


def execute(spec: RunSpec, *, resume: Path | None = None, registry: Registry = REGISTRY,
            console: Any = None) -> tuple[Path, dict[str, Any]]:
    """Run ``spec`` (or continue the run in ``resume``); returns (run_dir, summary).

    Everything that can be checked is checked before a directory is created or
    ``<out>/latest`` moves: the device, the output directory and name, the batch split,
    the objective's options; on resume, that only :data:`RESUMABLE` settings change,
    that a complete checkpoint exists (or none at all) and that the run is not
    finished. The run directory is locked while this process writes it (a second
    process gets a :class:`~gaf.errors.BadConfig`). On resume ``config.toml`` is
    rewritten only once the checkpoint has loaded. A new run that stops before
    anything was trained (an error or Ctrl-C) is removed and ``latest`` points back
    where it was; Ctrl-C during training saves a checkpoint first.
    """
    device = resolve_device(spec.device)  # fail before creating anything
    world = current_world(device)
    if resume is not None:
        changes = resume_changes(Path(resume), spec, registry)
    else:
        check_run_target(spec, world.size)
    objective = build_objective(spec, registry)
    previous_latest = _latest_target(Path(spec.out_dir)) if resume is None else None
    if resume is not None:
        run_dir = Path(resume)
    else:  # rank 0 names and creates the directory; the other ranks use the same one
        run_dir = Path(world.broadcast(str(new_run_dir(spec)) if world.is_main else None))
    with _locked(run_dir, world.is_main, created=resume is None,
                 previous_latest=previous_latest):
        if resume is not None:
            on_start = _check_resumable(spec, run_dir, changes, console, world.is_main)
        else:
            if world.is_main:
                write_config(spec, run_dir)
            on_start = None
        ctx = RunContext(spec, run_dir, registry=registry, console=console)
        try:
            summary = run_training(objective, ctx, resume=resume is not None,
                                   on_start=on_start)
        except (KeyboardInterrupt, Interrupted) as exc:
            detail = str(exc) if isinstance(exc, Interrupted) else "interrupted"
            if resume is None and not _has_progress(run_dir):
                _remove_new_run(run_dir, world.is_main, previous_latest)
                raise Interrupted(f"{detail} before anything was trained; nothing was kept "
                                  f"({run_dir} removed)") from None
            if not any(checkpoint.is_complete(p) for p in run_dir.rglob("step-*")):
                raise Interrupted(f"{detail}; no checkpoint was saved yet: gaf run --resume "
                                  f"{run_dir} starts it again from step 0") from None
            raise Interrupted(f"{detail}; continue with: gaf run --resume {run_dir}") from None
        except BaseException:
            if resume is None and not _has_progress(run_dir):
                _remove_new_run(run_dir, world.is_main, previous_latest)
            raise
    return run_dir, summary


def _check_resumable(spec: RunSpec, run_dir: Path, changes: list[str], console: Any,
                     is_main: bool) -> Any:
    """Refuse a resume that would lose or fake work (no complete checkpoint among
    several, a finished run, fewer steps than done); return the ``on_start`` callback
    that logs the changes and writes ``config.toml`` once the checkpoint has loaded."""
    latest, _ = checkpoint.resume_point(run_dir / "checkpoints")
    done = checkpoint.checkpoint_step(latest) if latest is not None else 0
    steps = spec.train.steps
    if done > steps:
        raise BadConfig(f"cannot resume {run_dir} with train.steps={steps}: its checkpoint "
                        f"is at step {done} (give train.steps > {done} to train longer)")
    summary = run_dir / "summary.json"
    if done == steps and summary.is_file():
        try:
            status = read_json(summary).get("status")
        except (GafError, AttributeError):
            status = None
        if status == "completed":
            raise BadConfig(f"{run_dir} is finished ({done} steps): nothing to resume; to "
                            f"train longer: gaf run --resume {run_dir} --set "
                            f"train.steps={done * 2}")

    def on_start() -> None:
        if console is not None and is_main:
            if latest is None:
                console.print(f"{run_dir} has no checkpoint: training again from step 0")
            for line in changes:
                console.print(f"resume: {line}")
        write_config(spec, run_dir)  # the checkpoint loaded: record the --set changes

    return on_start


def _has_progress(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything trained: a log or a checkpoint, of the run or
    of one of its stages."""
    return any(run_dir.rglob("metrics.jsonl")) or any(run_dir.rglob("checkpoints"))


def _latest_target(out_dir: Path) -> str | None:
    link = out_dir / "latest"
    return os.readlink(link) if link.is_symlink() else None


def _remove_new_run(run_dir: Path, is_main: bool, previous_latest: str | None) -> None:
    """Remove a new run that trained nothing and point ``latest`` back where it was."""
    if not is_main:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    link = run_dir.parent / "latest"
    if link.is_symlink() and os.readlink(link) == run_dir.name:
        link.unlink()
        if previous_latest is not None:
            with contextlib.suppress(OSError):
                link.symlink_to(previous_latest, target_is_directory=True)


@contextlib.contextmanager
def _locked(run_dir: Path, is_main: bool, *, created: bool,
            previous_latest: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (rank 0): a second ``gaf`` process that
    would write the same run stops with a :class:`~gaf.errors.BadConfig` instead."""
    if not is_main:
        yield
        return
    try:
        lock = run_lock(run_dir)
    except BadConfig:
        if created:
            _remove_new_run(run_dir, is_main, previous_latest)
        raise
    try:
        yield
    finally:
        lock.close()


def run_lock(run_dir: Path) -> Any:
    """An open file holding an exclusive, non-blocking ``flock`` on ``run_dir/.lock``
    (released when the file is closed or the process ends, so a killed run leaves no
    stale lock); a :class:`~gaf.errors.BadConfig` naming the holder when another
    process has it. Where ``fcntl`` does not exist (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return open(os.devnull)  # noqa: SIM115
    path = run_dir / ".lock"
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise BadConfig(f"cannot write to the run directory {run_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise BadConfig(f"{run_dir} is in use by another gaf process (pid {holder}); wait "
                        "for it to finish, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


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

    Rebuilds the run's objective with its trained weights (:func:`open_run`), runs the
    objective's evaluation and writes the metrics to ``RUN_DIR/eval.json``; returns them.
    """
    import torch

    path = Path(run_dir)
    spec = _finished_spec(path, sets, device, registry)
    with contextlib.closing(run_lock(path)):  # not while a gaf run writes it
        objective, ctx = _open(spec, path, registry, console)
        with torch.no_grad():
            metrics = objective.evaluate(ctx) or {}
        atomic_write_text(path / "eval.json", json.dumps(metrics, indent=2, default=str) + "\n")
        return metrics


def open_run(run_dir: str | Path, sets: tuple[str, ...] = (), *, device: str | None = None,
             registry: Registry = REGISTRY, console: Any = None) -> tuple[Any, RunContext]:
    """A finished run's objective and context, as ``gaf eval`` sees them: rebuilt from
    ``RUN_DIR/config.toml`` (``sets`` change its options, ``device`` where it runs), set
    up, with the trained weights loaded (the exported ``RUN_DIR/<module>/`` components,
    else the newest checkpoint) and its modules in eval mode. For tools that read a run
    (no lock is taken: do not point it at a run that is still training)."""
    path = Path(run_dir)
    return _open(_finished_spec(path, sets, device, registry), path, registry, console)


def _finished_spec(path: Path, sets: tuple[str, ...], device: str | None,
                   registry: Registry) -> RunSpec:
    if not (path / "config.toml").is_file():
        raise BadConfig(f"{path} is not a run directory (it has no config.toml)")
    cfg = path / "config.toml"
    spec = resolve(_config.read_toml(cfg), sets=sets, registry=registry, where=str(cfg))
    if device:
        spec.device = device
    return spec


def _open(spec: RunSpec, path: Path, registry: Registry, console: Any) -> tuple[Any, RunContext]:
    import torch

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
        raise BadConfig(f"{path} has no trained weights (no checkpoint and no exported "
                        f"module directory); did the run finish?")
    for mod in modules.values():
        mod.eval()
    return objective, ctx
