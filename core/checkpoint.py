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
    old = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and p != final)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The directory that ``latest.json`` names, or ``None`` when there is none."""
    latest = ckpt_dir / "latest.json"
    if not latest.is_file():
        return None
    info = read_json(latest)
    path = ckpt_dir / info["dir"]
    return path if path.is_dir() else None


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
