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

import inspect
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
    """Rebuild a component saved by :func:`save_component` and load its weights.

    A component that has tensors must find every one of them in ``model.safetensors``:
    a missing file, a missing tensor or a tensor of the wrong shape is a
    :class:`~gaf.errors.BadData` naming the file, never a freshly initialised model.
    A ``gaf.json`` that does not describe a component of ``kind`` (bad JSON, a missing
    or non-string ``name``, a ``config`` that is not a table, an option the component
    refuses) is a :class:`~gaf.errors.BadData` naming ``gaf.json``.
    """
    meta_path = path / META_FILE
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise BadData("not a gaf component file (expected a JSON object)", path=str(meta_path))
    name, saved_kind, cfg = meta.get("name"), meta.get("kind", kind), meta.get("config", {})
    if not isinstance(name, str) or not name:
        raise BadData("not a gaf component file: 'name' must be the registry name of the "
                      f"component, got {name!r}", path=str(meta_path), field="name")
    if not isinstance(saved_kind, str):
        raise BadData(f"'kind' must be a string, got {saved_kind!r}", path=str(meta_path),
                      field="kind")
    if saved_kind != kind:
        raise BadConfig(f"{path} holds a {saved_kind}, not a {kind}")
    if not isinstance(cfg, dict):
        raise BadData(f"'config' must be a table of options, got {cfg!r}",
                      path=str(meta_path), field="config")
    try:
        obj = registry.create(kind, name, **{**cfg, **overrides})
    except GafError as exc:
        raise BadData(str(exc), path=str(meta_path)) from None
    weights = path / WEIGHTS_FILE
    expected = obj.state_dict() if hasattr(obj, "state_dict") else {}
    if weights.is_file():
        load_state(obj, load_tensors(weights), where=str(weights))
    elif expected:
        raise BadData(f"missing: {kind} {name!r} has {len(expected)} tensors to load and "
                      f"no weights file (the directory holds {META_FILE} only); copy the "
                      "whole component directory", path=str(weights))
    if hasattr(obj, "load_assets"):
        obj.load_assets(path)
    return obj


def load_from(registry: Registry, kind: str, path: str | os.PathLike[str],
              **kwargs: Any) -> Any:
    """Load a ``kind`` component from ``path``, building it through ``registry``.

    Accepts a directory written by :func:`gaf.save` (``gaf.json`` +
    ``model.safetensors``), a run directory holding one in ``<kind>/``, or any
    directory that a registered ``loader`` for this kind accepts (for example a
    Hugging Face GPT-2 directory). A loader's ``accepts`` may raise a
    :class:`~gaf.errors.GafError` to say why a directory that looks like its format
    cannot be loaded (a damaged Hugging Face directory); that diagnosis is reported
    when no loader takes the directory. A directory that is none of these gets a
    message saying what it is (a run of another objective, a component of another
    kind) and what was expected.

    A ``torch.nn.Module`` comes back in eval mode (dropout off, as transformers'
    ``from_pretrained`` returns it), so a loaded model scores the same input the
    same way every time; the trainer switches the modules it optimises to train
    mode itself.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise BadConfig(f"cannot load {kind} from {path!r}: expected a path (a string or "
                        f"os.PathLike), got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise BadConfig(f"cannot load {kind} from {str(path)!r}: no such file or directory")
    if not p.is_dir():
        raise BadConfig(f"cannot load {kind} from {str(path)!r}: not a directory (a "
                        f"{kind} is a directory: a run, a gaf.save directory or a format "
                        "a loader reads)")
    for candidate in (p, p / kind):
        if (candidate / META_FILE).is_file():
            return _eval_mode(load_component(registry, kind, candidate, **kwargs))
    tried, diagnoses = [], []
    for entry in registry.entries("loader"):
        if entry.meta.get("loads", kind) != kind:
            continue
        loader = entry.load()
        if getattr(loader, "kind", kind) != kind:
            continue
        tried.append(entry.name)
        try:
            accepted = loader.accepts(p)
        except GafError as exc:  # it looks like this loader's format, but is damaged
            diagnoses.append(exc)
            continue
        if accepted:
            _check_loader_options(loader, entry.name, kind, p, kwargs)
            obj = _eval_mode(loader.load(p, **kwargs))
            return stamp(obj, kind, getattr(obj, "gaf_name", None) or entry.meta.get("creates"))
    if diagnoses:
        raise diagnoses[0]
    raise BadConfig(f"cannot load {kind} from {str(path)!r}: {_what_it_is(p, kind)}"
                    + (f" (loaders tried: {', '.join(tried)})" if tried else ""))


def _check_loader_options(loader: Any, name: str, kind: str, path: Path,
                          options: dict[str, Any]) -> None:
    """A :class:`~gaf.errors.BadConfig` when ``options`` are not parameters of the
    ``loader``'s ``load`` (``gaf.load(kind, path, **options)`` hands them on)."""
    if not options:
        return
    try:
        inspect.signature(loader.load).bind(path, **options)
    except TypeError:
        raise BadConfig(f"cannot load {kind} from {str(path)!r} with options "
                        f"{sorted(options)}: loader {name!r} reads it and its load() takes "
                        f"{_parameters_of(loader.load)}") from None
    except ValueError:  # no signature to read (a builtin): let the call decide
        return


def _parameters_of(function: Any) -> str:
    names = [n for n in inspect.signature(function).parameters if n not in ("self", "cls")]
    return "no options" if len(names) <= 1 else "the options " + ", ".join(names[1:])


def _what_it_is(path: Path, kind: str) -> str:
    """Why ``path`` holds no ``kind``: what it is instead, and where one might be."""
    held = sorted({_saved_kind(c) for c in path.iterdir() if (c / META_FILE).is_file()} - {None})
    deeper = sorted(str(c) for c in path.iterdir() if (c / kind / META_FILE).is_file())
    if (path / "config.toml").is_file():
        objective = _run_objective(path / "config.toml")
        what = f"it is a run directory of objective {objective!r}"
        what += f" holding {', '.join(held)} but no {kind}" if held else f" with no saved {kind}"
    else:
        what = f"it has no {META_FILE}"
        if held:
            what += f"; it holds saved {', '.join(held)} components but no {kind}"
    if deeper:
        what += f"; did you mean {' or '.join(deeper)}?"
    a = "an" if kind[:1] in "aeiou" else "a"
    return what + f"; expected a run that trains {a} {kind}, {a} {kind} saved with " \
                  f"gaf.save, or a directory {a} {kind} loader reads"


def _saved_kind(path: Path) -> str | None:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) and isinstance(meta.get("kind"), str) \
        else None


def _run_objective(config_file: Path) -> str:
    try:
        data = _config.read_toml(config_file)
        return str(data["objective"]["name"])
    except (GafError, KeyError, TypeError):
        return "?"


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
