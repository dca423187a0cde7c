"""Components on disk: save one, load it back through the registry.

A **component directory** (:func:`save_component`) holds ``gaf.json`` (kind, registry
name, config) and ``model.safetensors``; :func:`load_component` rebuilds the
component through a :class:`~gaf.registry.Registry` and loads the weights. A
component may also define ``save_assets(path)`` / ``load_assets(path)`` for files of
its own (a tokenizer). Nothing here unpickles: loading a file never runs code.

:func:`load_from` is what ``gaf.load`` does with any registry: a component directory,
a run directory holding one in ``<kind>/``, or a directory that a registered
``loader`` accepts. :func:`create_or_load` is what ``--policy X`` does: load when
``X`` is a path, else build the registered name.

This module sits above :mod:`gaf.registry` (it builds through it); the registry
itself knows nothing of files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import config as _config
from .atomic import atomic_save_tensors, atomic_write_text, load_state, load_tensors, read_json
from .errors import BadConfig, BadData, GafError
from .registry import REGISTRY, Registry, stamp

__all__ = ["META_FILE", "WEIGHTS_FILE", "save_component", "load_component", "load_from",
           "create_or_load", "load"]

META_FILE = "gaf.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def save_component(obj: Any, path: str | os.PathLike[str], *, kind: str | None = None,
                   name: str | None = None) -> Path:
    """Save a registry-built component (``gaf.save``): ``gaf.json`` + ``model.safetensors``.

    ``kind`` and ``name`` default to the ``gaf_kind``/``gaf_name`` that
    :func:`gaf.create` stamps on what it builds.
    """
    kind = kind or getattr(obj, "gaf_kind", None)
    name = name or getattr(obj, "gaf_name", None)
    if not kind or not name:
        raise GafError("save needs the component's kind and registry name "
                       "(build it with gaf.create or pass kind= and name=)")
    cfg = getattr(obj, "config", None)
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "name": name,
            "config": _config.to_dict(cfg) if cfg is not None else {}}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if hasattr(obj, "state_dict"):
        atomic_save_tensors(obj.state_dict(), path / WEIGHTS_FILE, {"gaf_kind": kind})
    if hasattr(obj, "save_assets"):  # e.g. a tokenizer's files
        obj.save_assets(path)
    atomic_write_text(path / META_FILE, json.dumps(meta, indent=2) + "\n")
    return path


def load_component(registry: Registry, kind: str, path: Path, **overrides: Any) -> Any:
    """Rebuild a component saved by :func:`save_component` and load its weights."""
    meta = read_json(path / META_FILE)
    if not isinstance(meta, dict) or "name" not in meta:
        raise BadData("not a gaf component file (no 'name')", path=str(path / META_FILE))
    if meta.get("kind", kind) != kind:
        raise GafError(f"{path} holds a {meta.get('kind')}, not a {kind}")
    cfg = {**meta.get("config", {}), **overrides}
    obj = registry.create(kind, meta["name"], **cfg)
    weights = path / WEIGHTS_FILE
    if weights.is_file():
        load_state(obj, load_tensors(weights), where=str(weights))
    if hasattr(obj, "load_assets"):
        obj.load_assets(path)
    return obj


def load_from(registry: Registry, kind: str, path: str | os.PathLike[str],
              **kwargs: Any) -> Any:
    """Load a ``kind`` component from ``path``, building it through ``registry``.

    Accepts a directory written by :func:`gaf.save` (``gaf.json`` +
    ``model.safetensors``), a run directory holding one in ``<kind>/``, or any
    directory that a registered ``loader`` for this kind accepts (for example a
    Hugging Face GPT-2 directory).

    A ``torch.nn.Module`` comes back in eval mode (dropout off, as transformers'
    ``from_pretrained`` returns it), so a loaded model scores the same input the
    same way every time; the trainer switches the modules it optimises to train
    mode itself.
    """
    p = Path(path)
    if not p.exists():
        raise GafError(f"cannot load {kind} from {str(path)!r}: no such file or directory")
    for candidate in (p, p / kind):
        if (candidate / META_FILE).is_file():
            return _eval_mode(load_component(registry, kind, candidate, **kwargs))
    tried = []
    for entry in registry.entries("loader"):
        if entry.meta.get("loads", kind) != kind:
            continue
        loader = entry.load()
        tried.append(entry.name)
        if getattr(loader, "kind", kind) == kind and loader.accepts(p):
            obj = _eval_mode(loader.load(p, **kwargs))
            return stamp(obj, kind, getattr(obj, "gaf_name", None) or entry.meta.get("creates"))
    hint = f" (loaders tried: {', '.join(tried)})" if tried else ""
    raise GafError(f"cannot load {kind} from {str(path)!r}: it has no {META_FILE}"
                   f" and no {kind} loader accepts it{hint}")


def create_or_load(registry: Registry, kind: str, name: str, **overrides: Any) -> Any:
    """:func:`load_from` when ``name`` is a path, else ``registry.create`` (what
    ``--policy X`` does)."""
    if registry.is_path(kind, name):
        if overrides:
            raise BadConfig(f"{kind} {name!r} is loaded from disk; its options cannot be "
                            f"overridden ({', '.join(overrides)})")
        return load_from(registry, kind, name)
    return registry.create(kind, name, **overrides)


def load(kind: str, path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load a component saved on disk: ``gaf.load("policy", "runs/…")``."""
    return load_from(REGISTRY, kind, path, **kwargs)


def _eval_mode(obj: Any) -> Any:
    """``obj.eval()`` for a torch module (anything with ``eval`` and ``train``)."""
    if callable(getattr(obj, "eval", None)) and callable(getattr(obj, "train", None)):
        obj.eval()
    return obj
