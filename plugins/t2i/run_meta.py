"""Reading a text-to-image run's ``pipeline.json``: every field checked, every problem
a :class:`~gaf.errors.BadData` naming the file and the field.

``pipeline.json`` is written by the objective (``ldm``, ``gan-int-cls``) and read by
its pipeline's ``from_run``; a hand-edited or damaged file must give one clear line,
never a ``KeyError`` from deep inside the loader. :func:`read_meta` reads and checks
the common part; :func:`module_dirs`, :func:`component_ref` and :func:`field` the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gaf.errors import BadConfig, BadData

PIPELINE_FILE = "pipeline.json"


class RunMeta:
    """A parsed ``pipeline.json`` and where it came from (for the messages)."""

    def __init__(self, data: dict[str, Any], path: Path):
        self.data, self.path = data, path

    @property
    def root(self) -> Path:
        return self.path.parent

    def fail(self, field: str, message: str) -> BadData:
        return BadData(message, path=str(self.path), field=field)


def read_meta(run_dir: str | Path, pipeline: str, objective: str) -> RunMeta:
    """``RUN_DIR/pipeline.json`` as a :class:`RunMeta`, checked to name ``pipeline``
    (a file without the ``"pipeline"`` key, from before it was recorded, means
    ``diffusion``). ``objective`` is named in the message for a directory without it."""
    root = Path(run_dir)
    path = root / PIPELINE_FILE
    if not path.is_file():
        raise BadConfig(f"{run_dir} is not a {pipeline} run: it has no {PIPELINE_FILE} "
                        f"(train one with gaf run --objective {objective})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadData(f"not valid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadData(f"cannot read: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise BadData("expected a JSON object", path=str(path))
    meta = RunMeta(data, path)
    named = field(meta, "pipeline", str, default="diffusion")
    if named != pipeline:
        raise BadConfig(f"{path} names pipeline {named!r}, not {pipeline!r}: load it with "
                        f"gaf.REGISTRY.get('pipeline', {named!r}).from_run(...)")
    return meta


def field(meta: RunMeta, key: str, kind: type | tuple[type, ...], *, default: Any = ...,
          allow_none: bool = False) -> Any:
    """``meta[key]`` checked to be a ``kind``; missing without a ``default`` (or of the
    wrong type) is a :class:`BadData` naming the file and field."""
    if key not in meta.data:
        if default is ...:
            raise meta.fail(key, "missing")
        return default
    value = meta.data[key]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        kinds = (kind,) if isinstance(kind, type) else kind
        names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
        raise meta.fail(key, f"expected {names}, got {value!r}")
    return value


def module_dirs(meta: RunMeta, ema: bool, required: tuple[str, ...]) -> dict[str, Path]:
    """The module directories of the run (``modules``, or ``ema_modules`` when ``ema``
    and the run has them), as absolute paths; each of ``required`` must be there, and
    every directory must exist."""
    key = "ema_modules" if ema and meta.data.get("ema_modules") else "modules"
    modules = field(meta, key, dict)
    out = {}
    for name, sub in modules.items():
        if not isinstance(sub, str) or not sub or Path(sub).is_absolute() or ".." in Path(sub).parts:
            raise meta.fail(f"{key}.{name}", f"expected a directory inside the run, got {sub!r}")
        path = meta.root / sub
        if not path.is_dir():
            raise BadConfig(f"{path} is missing: did the run finish? (gaf run --resume "
                            f"{meta.root} completes it)")
        out[name] = path
    for name in required:
        if name not in out:
            raise meta.fail(f"{key}.{name}", "missing")
    return out


def component_ref(meta: RunMeta, key: str) -> dict[str, Any] | None:
    """A component recorded by name (``{"name": …, "options": {…}}``) or by ``path``,
    checked; ``None`` when the field is null or absent."""
    ref = field(meta, key, dict, default=None, allow_none=True)
    if ref is None:
        return None
    if "path" in ref and ref["path"]:
        if not isinstance(ref["path"], str):
            raise meta.fail(f"{key}.path", f"expected a path, got {ref['path']!r}")
        return ref
    if not isinstance(ref.get("name"), str) or not ref["name"]:
        raise meta.fail(f"{key}.name", f"expected a registered name, got {ref.get('name')!r}")
    if not isinstance(ref.get("options", {}), dict):
        raise meta.fail(f"{key}.options", f"expected a table of options, got {ref['options']!r}")
    return ref


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number"}
