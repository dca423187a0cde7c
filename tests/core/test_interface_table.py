"""docs/architecture.md's interface table names exactly the members the Protocols declare,
and the arguments of the methods it spells out.

Each row's contract column is read for member names (``name(…)``, a bare ``name``, and
``len(ds)``/``ds[i]`` for ``__len__``/``__getitem__``); they must equal the members of
the ``gaf.interfaces`` Protocol of that row (its annotations and methods; for
``Objective`` also the optional members ``objective_member`` resolves). A member added
to a Protocol without the doc, or documented without the Protocol, fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import gaf.interfaces as interfaces
from gaf.interfaces.training import OBJECTIVE_DEFAULTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
#: words in backticks that are values or arguments, not members
NOT_MEMBERS = {"nn.Module", "None", "True", "False"}


def table() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("## Interfaces"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \| [^|]*\|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def documented(contract: str) -> set[str]:
    """Member names in a row; a parent interface named in it (``a `Policy` that …``)
    stands for that interface's members, and names after "optional" must be ones the
    Protocol's docstring (or, for ``Objective``, ``OBJECTIVE_DEFAULTS``) describes."""
    names = set()
    for chunk in re.findall(r"`([^`]*)`", contract):
        if chunk in NOT_MEMBERS:
            continue
        if chunk in interfaces.__all__:  # a type or a parent interface, not a member
            parent = getattr(interfaces, chunk)
            if getattr(parent, "_is_protocol", False):
                names |= declared(parent)
            continue
        if re.match(r"len\(\w+\)", chunk):
            names.add("__len__")
        if re.match(r"\w+\[\w+\]", chunk):
            names.add("__getitem__")
            continue
        m = re.match(r"(\w+)(\(|$|\s)", chunk)
        if m and not chunk.startswith("len("):
            names.add(m.group(1))
    return names


def optional(contract: str) -> set[str]:
    """Names the row calls optional: backticked names after "optional(ly)" up to the
    end of that clause (a ";" or a "|")."""
    out = set()
    for clause in re.findall(r"optional(?:ly)?[^;|]*", contract):
        out |= {m.group(1) for m in re.finditer(r"`(\w+)", clause)}
    return out


def declared(proto: type) -> set[str]:
    names = set()
    for klass in proto.__mro__:
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {k for k, v in vars(klass).items()
                  if callable(v) or isinstance(v, (classmethod, staticmethod, property))}
    keep = {"__call__", "__len__", "__getitem__"}
    names = {n for n in names if not n.startswith("_") or n in keep}
    if interfaces.Objective in proto.__mro__:
        names |= set(OBJECTIVE_DEFAULTS)
    return names


ROWS = table()


def test_every_protocol_has_a_row():
    protocols = {n for n in interfaces.__all__ if getattr(getattr(interfaces, n), "_is_protocol", False)}
    assert protocols == set(ROWS), (protocols ^ set(ROWS))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_row_names_what_the_protocol_declares(name):
    proto = getattr(interfaces, name)
    doc, code = documented(ROWS[name]), declared(proto)
    extra = optional(ROWS[name]) - code
    described = set(OBJECTIVE_DEFAULTS) if interfaces.Objective in proto.__mro__ else set()
    undescribed = {n for n in extra if n not in described and n not in (proto.__doc__ or "")}
    assert not undescribed, f"optional members {sorted(undescribed)} are not in {name}'s docstring"
    doc -= extra
    assert doc == code, {"in the doc only": sorted(doc - code), "in the code only": sorted(code - doc)}


def arguments(contract: str) -> list[tuple[str, list[str]]]:
    """``(method, argument names)`` for each ``name(args)`` in a row, shapes such as
    ``logits (B,V)``, ``*`` and defaults left out."""
    out = []
    for m in re.finditer(r"`(\w+)\(((?:[^()`]|\([^()`]*\))*)\)", contract):
        args = re.sub(r"\([^()]*\)", "", m.group(2))
        names = [n.group(1) for a in args.split(",") if (n := re.match(r"\s*\**(\w+)", a))]
        out.append((m.group(1), names))
    return out


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_row_names_the_arguments_in_order(name):
    """A method the Protocol declares is shown with its own parameter names, in order
    (trailing ones may be left out)."""
    proto = getattr(interfaces, name)
    for method, names in arguments(ROWS[name]):
        func = next((vars(k)[method] for k in proto.__mro__ if method in vars(k)), None)
        func = getattr(func, "__func__", func)
        if not inspect.isfunction(func):  # not declared on the Protocol (``len(ds)``, an
            continue                       # optional member documented in prose)
        params = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
        assert names == params[:len(names)], f"{name}.{method}: the doc shows {names}, the code has {params}"
