"""gaf: a plugin-based framework for preference optimisation and text-to-image generation.

The public API (importing ``gaf`` does not import torch)::

    import gaf

    gaf.names("policy")                                  # ['gpt2', 'gpt2-tiny', ...]
    policy = gaf.create("policy", "gpt2-tiny")           # build a registered component
    sampler = gaf.create("sampler", "top-k", k=20)       # ... with config overrides
    policy = gaf.load("policy", "runs/2026-11-26-sft-1a2b3c")   # a trained one
    gaf.save(policy, "my-policy")                        # gaf.json + model.safetensors

    @gaf.register("sampler", "my-sampler")               # add your own
    class MySampler: ...

    run_dir, summary = gaf.run("sft", policy="gpt2-tiny", sets=["train.steps=100"])
    gaf.tune_malloc()          # glibc thresholds for tensor work, as the gaf command sets

Interfaces live in :mod:`gaf.interfaces`, hooks in :mod:`gaf.hookspecs`, the training
loop in :mod:`gaf.train`, starting runs in :mod:`gaf.launch`, saving and loading
components in :mod:`gaf.components`, configs in :mod:`gaf.config`, errors in
:mod:`gaf.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .hooks import hookimpl
from .components import load
from .malloc import tune_malloc
from .registry import REGISTRY, create, names, register

__all__ = ["__version__", "create", "load", "names", "register", "save", "run", "hookimpl",
           "REGISTRY", "tune_malloc"]


def save(component: Any, path: str | Path, *, kind: str | None = None,
         name: str | None = None) -> Path:
    """Save a component built by :func:`create` (or :func:`load`) to directory ``path``."""
    from .components import save_component

    return save_component(component, path, kind=kind, name=name)


def run(objective: str, *, config: str | Path | Mapping[str, Any] | None = None,
        sets: Sequence[str] = (), progress: bool = False,
        **components: str) -> tuple[Path, dict[str, Any]]:
    """Train like ``gaf run``: ``gaf.run("sft", policy="gpt2-tiny", sets=["train.lr=1e-3"])``.

    Keyword arguments name components by kind (``policy=``, ``task=``, ``sampler=``);
    ``config`` is a run file, or its contents as a dict (``{"train": {"steps": 100}}``).
    Returns the run directory and the summary. Bad arguments raise
    :class:`gaf.errors.GafError` with the message ``gaf run`` would print.
    """
    import os

    from . import config as _config
    from .errors import BadConfig
    from .launch import execute
    from .spec import resolve

    if config is None or isinstance(config, Mapping):
        data = config
    elif isinstance(config, (str, os.PathLike)):
        data = _config.read_toml(config)
    else:
        raise BadConfig(f"config must be a run file's path or a dict of its sections, got "
                        f"{type(config).__name__}")
    spec = resolve(data, objective=objective, components=components, sets=sets,
                   top={"progress": progress})
    return execute(spec)
