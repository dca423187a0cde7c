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


_CHECKS = "gaf_checks"


class OptionError(BadConfig):
    """A config value outside what its option declares (or a rule relating options).

    The message names the option (``lr must be > 0, got nan``); :func:`from_dict` puts
    the config's ``<kind> <name>: `` in front, so every such error reads the same."""


@attrs.frozen
class Checks:
    """What :func:`option` declares about a value: bounds, choices and finiteness."""

    ge: Any = None
    gt: Any = None
    le: Any = None
    lt: Any = None
    choices: tuple[Any, ...] | None = None
    finite: bool = True

    def describe(self) -> str:
        """The rule as text: ``> 0``, ``in [0, 1)``, ``one of: a, b`` (empty if none)."""
        if self.choices is not None:
            return "one of: " + ", ".join(str(c) for c in self.choices)
        low = (f"[{self.ge}" if self.ge is not None else
               f"({self.gt}" if self.gt is not None else None)
        high = (f"{self.le}]" if self.le is not None else
                f"{self.lt})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        for bound, sign in ((self.ge, ">="), (self.gt, ">"), (self.le, "<="), (self.lt, "<")):
            if bound is not None:
                return f"{sign} {bound}"
        return ""

    def violation(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule (``must be > 0``), or None if it fits."""
        if self.choices is not None and value not in self.choices:
            return "must be " + self.describe()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if ((self.ge is not None and not value >= self.ge)
                or (self.gt is not None and not value > self.gt)
                or (self.le is not None and not value <= self.le)
                or (self.lt is not None and not value < self.lt)):
            return "must be " + self.describe()
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            return "must be finite"
        return None


def option(default: Any = attrs.NOTHING, help: str = "", *, factory: Any = None,
           validator: Any = None, ge: Any = None, gt: Any = None, le: Any = None,
           lt: Any = None, choices: Any = None, finite: bool = True) -> Any:
    """An attrs field with a help string (shown by ``gaf show``) and declared checks.

    ``ge``/``gt``/``le``/``lt`` bound a number (each entry of a list), ``choices``
    lists the allowed values, and float values must be finite unless ``finite=False``
    (e.g. an option whose default is ``inf``). ``Literal`` types are checked too.
    Breaking a rule raises :class:`OptionError` (a :class:`BadConfig`) when the config
    is built, directly or through :func:`from_dict` / :func:`evolve`.
    """
    checks = Checks(ge, gt, le, lt, tuple(choices) if choices is not None else None, finite)
    validators = [_check_option] + ([validator] if validator is not None else [])
    metadata = {_HELP: help, _CHECKS: checks}
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, validator=validators)
    return attrs.field(default=default, metadata=metadata, validator=validators)


def option_error(name: str, rule: str, value: Any) -> OptionError:
    """The uniform error for an option: ``<name> <rule>, got <value>``."""
    return OptionError(f"{name} {rule}, got {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # -1, not -1.0: as the user most likely wrote it
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{value:.3g}"  # 1e+100, not a hundred digits
    return repr(value) if isinstance(value, (str, list)) else str(value)


_LITERALS: dict[type, dict[str, tuple[Any, ...]]] = {}


def _literals(cls: type) -> dict[str, tuple[Any, ...]]:
    """The ``Literal`` choices of ``cls``'s fields (resolved once per class)."""
    if cls not in _LITERALS:
        _LITERALS[cls] = {name: typing.get_args(tp) for name, tp in _hints(cls).items()
                          if typing.get_origin(tp) is typing.Literal}
    return _LITERALS[cls]


def _check_option(inst: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    checks: Checks = attribute.metadata.get(_CHECKS) or Checks()
    literal = _literals(type(inst)).get(attribute.name)
    if literal is not None and checks.choices is None:
        checks = attrs.evolve(checks, choices=literal)
    items = value if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        why = checks.violation(item)
        if why is not None:
            if item is not value:
                why += " (each entry)"
            raise option_error(attribute.name, why, value)


@attrs.frozen
class FieldInfo:
    """One documented config field: name, type (as text), default, help and the
    declared rule as text (``> 0``, ``in [0, 1)``, ``one of: a, b``; empty if none)."""

    name: str
    type: str
    default: Any
    help: str
    bounds: str = ""


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
        checks = f.metadata.get(_CHECKS)
        bounds = checks.describe() if checks is not None else ""
        out.append(FieldInfo(f.name, _type_name(tp), default, f.metadata.get(_HELP, ""), bounds))
    return out


def field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (tuples become lists, nested configs become dicts)."""
    return attr.asdict(cfg, retain_collection_types=False)


def from_dict(cls: type, data: Mapping[str, Any], *, where: str = "") -> Any:
    """Build ``cls`` from ``data``, coercing values to the field types.

    Unknown keys raise :class:`BadConfig` naming the valid keys (and close matches);
    values of the wrong type raise :class:`BadConfig` naming the field; values that
    break an option's declared rule raise ``<where>: <option> must be …``.
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
    except OptionError as exc:
        raise OptionError(f"{where}{exc}") from None
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
            choices = ", ".join(str(a) for a in typing.get_args(tp))
            raise BadConfig(f"{where} must be one of: {choices}, got {value!r}")
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
    if not isinstance(item, str) or "=" not in item:
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
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise BadConfig(f"{p}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                        "a run file is TOML, which is UTF-8") from None
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
