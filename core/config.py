"""attrs config classes: documented fields, dict/TOML round-trips and ``key=value`` overrides.

Declare a config as an attrs class whose fields use :func:`option` so that
``gaf show`` can print each field's default and help::

    @attrs.define
    class TopPConfig:
        top_p: float = option(0.9, "keep the smallest set of tokens whose mass reaches p")

:func:`from_dict` builds a config from plain data and rejects unknown keys with the
list of valid ones; :func:`parse_value` reads a ``--set`` value as a TOML literal
(falling back to a bare string); :func:`dumps_toml` / :func:`loads_toml` round-trip.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

import attr
import attrs

from .errors import BadConfig, did_you_mean

_HELP = "gaf_help"


def option(default: Any = attrs.NOTHING, help: str = "", *, factory: Any = None,
           validator: Any = None) -> Any:
    """An attrs field with a help string (shown by ``gaf show``)."""
    if factory is not None:
        return attrs.field(factory=factory, metadata={_HELP: help}, validator=validator)
    return attrs.field(default=default, metadata={_HELP: help}, validator=validator)


@attrs.frozen
class FieldInfo:
    """One documented config field: name, type (as text), default and help."""

    name: str
    type: str
    default: Any
    help: str


def describe(cls: type) -> list[FieldInfo]:
    """The documented fields of an attrs config class, in declaration order."""
    hints = _hints(cls)
    out = []
    for f in attrs.fields(cls):
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if default is attrs.NOTHING:
            default = None
        tp = hints.get(f.name, f.type)
        out.append(FieldInfo(f.name, _type_name(tp), default, f.metadata.get(_HELP, "")))
    return out


def field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (tuples become lists, nested configs become dicts)."""
    return attr.asdict(cfg, retain_collection_types=False)


def from_dict(cls: type, data: Mapping[str, Any], *, where: str = "") -> Any:
    """Build ``cls`` from ``data``, coercing values to the field types.

    Unknown keys raise :class:`BadConfig` naming the valid keys (and close matches);
    values of the wrong type raise :class:`BadConfig` naming the field.
    """
    where = f"{where}: " if where else ""
    names = field_names(cls)
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise BadConfig(f"{where}unknown key {key!r}{did_you_mean(key, names)} "
                            f"(valid keys: {', '.join(names)})")
        kwargs[key] = coerce(value, hints.get(key, Any), f"{where}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadConfig(f"{where}{exc}") from None


def evolve(cfg: Any, changes: Mapping[str, Any], *, where: str = "") -> Any:
    """A copy of ``cfg`` with ``changes`` applied (validated like :func:`from_dict`)."""
    merged = {**to_dict(cfg), **changes}
    return from_dict(type(cfg), merged, where=where)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a parsed value to a field type (int → float, list → tuple, checks the rest)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is None or isinstance(tp, str):
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except BadConfig:
                continue
        raise BadConfig(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise BadConfig(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise BadConfig(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise BadConfig(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if attrs.has(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BadConfig(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BadConfig(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise BadConfig(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadConfig(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise BadConfig(f"{where}: expected a string, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value: a TOML literal (``3``, ``1e-4``, ``true``, ``[1, 2]``,
    ``"x"``), otherwise the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(item: str) -> tuple[str, Any]:
    """Split ``key=value`` (for ``--set``) into the key and the parsed value."""
    if "=" not in item:
        raise BadConfig(f"--set expects KEY=VALUE, got {item!r}")
    key, _, value = item.partition("=")
    key = key.strip()
    if not key:
        raise BadConfig(f"--set expects KEY=VALUE, got {item!r}")
    return key, parse_value(value.strip())


# --------------------------------------------------------------------------- TOML


def loads_toml(text: str, *, path: str = "<string>") -> dict[str, Any]:
    """Parse TOML; a syntax error becomes :class:`BadConfig` naming the file and line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{path}: {exc}") from None


def read_toml(path: Any) -> dict[str, Any]:
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadConfig(f"cannot read config {p}: {exc.strerror}") from None
    return loads_toml(text, path=str(p))


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write nested plain data as TOML (scalars first, then one table per mapping)."""
    lines: list[str] = []
    _emit_table(lines, data, prefix="")
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit_table(lines: list[str], data: Mapping[str, Any], prefix: str) -> None:
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_key(key)} = {_literal(value)}")
    for key, value in tables:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        lines.append("")
        lines.append(f"[{name}]")
        _emit_table(lines, value, name)


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _is_control(c: str) -> bool:
    return ord(c) < 0x20 or ord(c) == 0x7F


def _key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _literal(str(key))


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _is_control(c) else c)
                             for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_literal(v)}" for k, v in value.items()) + "}"
    raise BadConfig(f"cannot write {value!r} ({type(value).__name__}) to TOML")


# -------------------------------------------------------------------------- types


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return {f.name: f.type for f in attrs.fields(cls)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    if tp is None or tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        if origin in (typing.Union, types.UnionType):
            return " | ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))
