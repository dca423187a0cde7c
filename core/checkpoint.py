"""Training checkpoints: what ``--resume`` needs to continue a run exactly.

A checkpoint (:func:`save_training_state`) is a directory ``step-NNNNNNNN`` under
``RUN_DIR/checkpoints/`` holding ``modules.safetensors`` (every module's tensors as
``<module>.<param>``), ``optimizer.safetensors`` (optimiser tensors and RNG states)
and ``state.json`` (step, optimiser hyper-parameters, scheduler state);
``checkpoints/latest.json`` names the newest. Nothing here unpickles.

Every file is written through :mod:`gaf.atomic` and the directory is renamed into
place, so a crash leaves either the old checkpoint or the new one, never half of one.
Trained modules exported as components (``RUN_DIR/<module>/``) are
:mod:`gaf.components`' business.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_save_tensors, atomic_write_text, load_state, load_tensors, read_json

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT_VERSION = 1


def save_training_state(ckpt_dir: Path, step: int, modules: Mapping[str, Any],
                        optimizer: Any, scheduler: Any, extra: Mapping[str, Any] | None = None,
                        keep: int = 2, rank_rng: Sequence[Any] | None = None,
                        weights: Mapping[str, Any] | None = None,
                        optimizer_state: Mapping[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` under ``ckpt_dir`` atomically, update ``latest.json`` and
    keep only the newest ``keep`` checkpoints. Returns the checkpoint directory.

    ``rank_rng`` (distributed runs): every rank's CPU RNG state, in rank order, saved
    as ``rng.cpu.rank<r>`` so that each rank resumes its own stream. ``weights``
    (``{module: state_dict}``) and ``optimizer_state`` (an ``optimizer.state_dict()``
    with parameters numbered in module order) replace what ``modules`` and
    ``optimizer`` hold, for sharded models gathered by the caller."""
    import torch

    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    states = weights if weights is not None else {m: mod.state_dict()
                                                  for m, mod in modules.items()}
    flat = {f"{m}.{k}": v for m, sd in states.items() for k, v in sd.items()}
    atomic_save_tensors(flat, tmp / "modules.safetensors")

    opt_state = optimizer_state if optimizer_state is not None else optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    for r, rng in enumerate(rank_rng or ()):
        tensors[f"rng.cpu.rank{r}"] = rng
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                plain_state.setdefault(str(pid), {})[key] = value
    atomic_save_tensors(tensors, tmp / "optimizer.safetensors")
    state = {"format_version": FORMAT_VERSION, "step": step,
             "optimizer": {"param_groups": opt_state["param_groups"], "plain_state": plain_state},
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "extra": dict(extra or {})}
    atomic_write_text(tmp / "state.json", json.dumps(state, indent=1) + "\n")

    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(ckpt_dir / "latest.json", json.dumps({"step": step, "dir": final.name}) + "\n")
    # Only checkpoints of earlier steps are superseded; a later one (left by a run
    # resumed from an older checkpoint) is never deleted.
    old = [path for n, path in _step_dirs(ckpt_dir) if n < step]
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


#: the files of a complete checkpoint directory
CHECKPOINT_FILES = ("modules.safetensors", "optimizer.safetensors", "state.json")


def _step_dirs(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every ``step-NNNNNNNN`` directory, oldest first."""
    out = []
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            digits = path.name.removeprefix("step-")
            if path.name.startswith("step-") and digits.isdigit() and path.is_dir():
                out.append((int(digits), path))
    return sorted(out)


def is_complete(path: Path) -> bool:
    """Whether checkpoint directory ``path`` holds every file and its ``state.json``
    reads back with the step its name says."""
    if not all((path / f).is_file() for f in CHECKPOINT_FILES):
        return False
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and path.name == f"step-{state.get('step', -1):08d}"


def checkpoint_step(path: Path) -> int:
    """The step of checkpoint directory ``path`` (from its ``state.json``)."""
    return int(read_json(path / "state.json")["step"])


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``ckpt_dir``, or ``None`` when there is none.

    ``latest.json`` names the newest one a run wrote; when it is missing, unreadable or
    names a directory that is gone or incomplete, the newest complete ``step-*``
    directory is used instead (:func:`resume_point` says which and why)."""
    return resume_point(ckpt_dir)[0]


def resume_point(ckpt_dir: Path) -> tuple[Path | None, str]:
    """``(checkpoint, note)``: the newest complete checkpoint under ``ckpt_dir`` and,
    when ``latest.json`` does not name it, a sentence saying why another was taken
    (else ``""``). ``(None, "")`` when there are no checkpoints at all; a
    :class:`~gaf.errors.BadData` when there are checkpoint directories but none is
    complete (resuming from step 0 would overwrite them)."""
    from .errors import BadData

    steps = _step_dirs(ckpt_dir)
    complete = [path for _, path in steps if is_complete(path)]
    named = None
    latest = ckpt_dir / "latest.json"
    if latest.is_file():
        try:
            info = json.loads(latest.read_text(encoding="utf-8"))
            named = ckpt_dir / str(info["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            named = None
    if not complete:
        if steps:
            raise BadData(f"no complete checkpoint to resume from ({len(steps)} checkpoint "
                          f"director{'y' if len(steps) == 1 else 'ies'}, each missing one of "
                          f"{', '.join(CHECKPOINT_FILES)}); nothing was changed",
                          path=str(ckpt_dir))
        return None, ""
    newest = complete[-1]
    if named is not None and named == newest:
        return newest, ""
    if not latest.is_file():
        why = "latest.json is missing"
    elif named is None:
        why = "latest.json cannot be read"
    elif not named.is_dir():
        why = f"latest.json names {named.name}, which is gone"
    elif not is_complete(named):
        why = f"latest.json names {named.name}, which is incomplete"
    else:
        why = f"latest.json names {named.name}, an older one"
    return newest, f"{why}; using the newest complete checkpoint, {newest.name}"


def load_module_weights(ckpt: Path, modules: Mapping[str, Any]) -> None:
    """Load every module's weights from checkpoint ``ckpt`` (strict)."""
    weights = load_tensors(ckpt / "modules.safetensors")
    for m, mod in modules.items():
        prefix = f"{m}."
        load_state(mod, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                   where=str(ckpt / "modules.safetensors"))


def read_optimizer_state(ckpt: Path) -> dict[str, Any]:
    """The ``optimizer.state_dict()`` saved in checkpoint ``ckpt``."""
    state = read_json(ckpt / "state.json")
    tensors = load_tensors(ckpt / "optimizer.safetensors")
    opt: dict[str, Any] = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt["state"].setdefault(int(pid), {})[name] = value
    for pid, plain in state["optimizer"]["plain_state"].items():
        opt["state"].setdefault(int(pid), {}).update(plain)
    return opt


def match_state_layout(optimizer: Any) -> None:
    """Give every loaded optimizer-state tensor its parameter's memory layout.

    Checkpoints store contiguous tensors; a parameter kept in another layout (e.g. a
    channels-last convolution weight) then gets state with other strides, which the
    fused Adam kernels do not handle (they index the raw memory alike), so a resumed
    step would differ from the uninterrupted one. Copies into ``empty_like(param)``.
    """
    import torch

    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if (torch.is_tensor(value) and value.shape == p.shape
                        and value.stride() != p.stride()):
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def load_schedule_and_rng(ckpt: Path, scheduler: Any, rank: int = 0) -> dict[str, Any]:
    """Restore the LR scheduler and this rank's RNG from ``ckpt``; return state.json."""
    import torch

    state = read_json(ckpt / "state.json")
    tensors = load_tensors(ckpt / "optimizer.safetensors")
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors.get(f"rng.cpu.rank{rank}", tensors["rng.cpu"]))
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state
