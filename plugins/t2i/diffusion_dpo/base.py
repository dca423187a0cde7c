"""The trained run a ``diffusion-dpo`` run starts from (``objective.init_run=RUN_DIR``).

:func:`load_base` reads the base run's ``pipeline.json`` (an ``ldm`` run, or any run
whose pipeline is ``diffusion``) through the loader of ``gaf sample --pipeline``
(:func:`~gaf.plugins.t2i.diffusion_pipeline.load_parts`) and its ``config.toml`` for the
dataset it was trained on. It gives the noise model (EMA weights by default: what the
base run samples with), the conditioner, the first stage, the *training* scheduler, the
sample shape, and the records that the fine-tuned run's own ``pipeline.json`` writes so
that it loads the same conditioner and first stage (absolute paths into the base run:
the base run directory must stay where it is).

:func:`base_context` is the run's context seen with the base run's dataset: the
dataset is not an option of ``diffusion-dpo`` (it is the base run's, whose training
captions and evaluation splits the fine-tuned model must share), so the shared helpers
that rebuild the run's dataset (the evaluation's splits, a CLIP stage) read it there.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import attrs

from gaf.config import read_toml
from gaf.errors import BadConfig
from gaf.spec import ComponentSpec

__all__ = ["BaseRun", "load_base", "base_context"]


@attrs.define
class BaseRun:
    """What :func:`load_base` reads from the base run."""

    root: Path
    parts: dict[str, Any]  # DiffusionPipeline keyword arguments (modules on the device)
    dataset: ComponentSpec
    conditioner_record: dict[str, Any] | None
    autoencoder_record: dict[str, Any]
    scheduler_record: dict[str, Any]
    condition_key: str


def load_base(run_dir: str, *, ema: bool, device: Any, registry: Any,
              option: str = "objective.init_run") -> BaseRun:
    """The base run in ``run_dir`` (see the module docstring); a directory that is not a
    finished diffusion run is a :class:`BadConfig` naming ``option``."""
    from ..diffusion_pipeline import load_parts, scheduler_record
    from ..run_meta import component_ref, module_dirs, read_meta

    if not run_dir:
        raise BadConfig(f"diffusion-dpo starts from a trained ldm run: set {option}=RUN_DIR")
    root = Path(run_dir).expanduser().resolve()
    if not root.is_dir():
        raise BadConfig(f"{option}={run_dir!r}: no such directory (a trained ldm run)")
    meta = read_meta(root, "diffusion", "ldm")
    config = root / "config.toml"
    if not config.is_file():
        raise BadConfig(f"{option}={run_dir!r} has no config.toml (not a run directory)")
    section = read_toml(config).get("dataset")
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise BadConfig(f"{config} has no [dataset]: {option} must be a run trained on a "
                        f"dataset (an ldm run)")
    options = {k: v for k, v in section.items() if k != "name"}
    parts = load_parts(meta, ema=ema, device=device, registry=registry)
    dirs = module_dirs(meta, ema, required=("noise_model",))
    if "conditioner" in dirs:  # trained with the model: loaded from the base run
        cond_record: dict[str, Any] | None = {"name": str(dirs["conditioner"]), "options": {}}
    else:
        cond_record = component_ref(meta, "conditioner")
    first = dict(component_ref(meta, "autoencoder") or {})
    if first.get("path") and not Path(first["path"]).is_absolute():
        first["path"] = str(root / first["path"])
    key = meta.data.get("condition_key", "caption")
    return BaseRun(root=root, parts=parts, dataset=ComponentSpec(section["name"], options),
                   conditioner_record=cond_record, autoencoder_record=first,
                   scheduler_record=copy.deepcopy(scheduler_record(meta, "scheduler")),
                   condition_key=str(key))


def base_context(ctx: Any, base: BaseRun) -> Any:
    """A shallow copy of ``ctx`` whose spec has the base run's ``dataset`` (the run's own
    spec, and its ``config.toml``, are left as they are)."""
    view = copy.copy(ctx)
    view.spec = attrs.evolve(ctx.spec, components={**ctx.spec.components,
                                                   "dataset": base.dataset})
    view._components = {}
    return view
