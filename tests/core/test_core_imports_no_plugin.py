"""The core imports no plugin (issue 15 §1): ``gaf.plugins`` sits above the whole core.

Statically, every ``core/**/*.py`` is parsed with :mod:`ast` and each import, at module
level or inside a function (``if TYPE_CHECKING:`` blocks too: a name there still
couples the core to a plugin's layout), is resolved to an absolute module name; any
that is ``gaf.plugins`` or below fails, as does ``importlib.import_module`` /
``__import__`` with such a literal name. Relative imports are resolved from the
file's own package (``core/x.py`` is ``gaf.x``, ``core/interfaces/y.py`` is
``gaf.interfaces.y``), so ``from .plugins import x`` and ``from .. import plugins`` are
caught too. The checker itself is tested on snippets that must and must not be caught.

At run time, importing ``gaf`` and ``gaf.cli``, ``gaf sample --help`` and ``gaf list``
leave no ``gaf.plugins`` module in ``sys.modules`` (a fresh interpreter each): the
core reaches plugins only through registry targets, imported when a component is used.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
PLUGINS = "gaf.plugins"
IMPORTERS = {("importlib", "import_module"), (None, "import_module"), (None, "__import__")}


def package_of(path: Path, core: Path = CORE) -> list[str]:
    """``["gaf", "interfaces"]`` for ``core/interfaces/y.py``: the package a relative
    import in ``path`` starts from."""
    return ["gaf", *path.relative_to(core).parent.parts]


def _is_plugin(name: str) -> bool:
    return name == PLUGINS or name.startswith(PLUGINS + ".")


def plugin_imports(source: str, package: list[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``source`` that reaches ``gaf.plugins``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_plugin(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    raise AssertionError(f"line {node.lineno}: relative import above gaf")
                base = package[:len(package) - node.level + 1]
            else:
                base = []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [module] if _is_plugin(module) else [
                f"{module}.{a.name}" for a in node.names if _is_plugin(f"{module}.{a.name}")]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            key = ((func.value.id if isinstance(func.value, ast.Name) else "?", func.attr)
                   if isinstance(func, ast.Attribute) else
                   (None, func.id) if isinstance(func, ast.Name) else None)
            first = node.args[0]
            if (key in IMPORTERS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str) and _is_plugin(first.value)):
                found.append((node.lineno, first.value))
    return found


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_there_are_core_files_to_check():
    names = {p.relative_to(CORE).as_posix() for p in CORE_FILES}
    assert {"cli.py", "registry.py", "interfaces/images.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_no_core_module_imports_a_plugin(path):
    found = plugin_imports(path.read_text(encoding="utf-8"), package_of(path))
    assert not found, (f"core/{path.relative_to(CORE).as_posix()} imports plugins "
                       f"(reach them through the registry): {found}")


@pytest.mark.parametrize("source, package", [
    ("import gaf.plugins", ["gaf"]),
    ("import json, gaf.plugins.t2i.diffusion_pipeline as p", ["gaf"]),
    ("from gaf.plugins.images.grid import save_grid", ["gaf"]),
    ("from gaf import plugins", ["gaf"]),
    ("from gaf import config, plugins", ["gaf"]),
    ("def f():\n    from gaf.plugins.t2i import ldm\n    return ldm", ["gaf"]),
    ("class A:\n    def m(self):\n        if True:\n            import gaf.plugins.nn", ["gaf"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gaf.plugins import x",
     ["gaf"]),
    ("from .plugins.images import grid", ["gaf"]),
    ("from . import plugins", ["gaf"]),
    ("from ..plugins import t2i", ["gaf", "interfaces"]),
    ("from .. import plugins", ["gaf", "interfaces"]),
    ("import importlib\nimportlib.import_module('gaf.plugins.t2i')", ["gaf"]),
    ("from importlib import import_module\nimport_module('gaf.plugins')", ["gaf"]),
    ("__import__('gaf.plugins.lm')", ["gaf"]),
])
def test_the_checker_catches_every_form(source, package):
    assert plugin_imports(source, package), source


@pytest.mark.parametrize("source, package", [
    ('"""Docs may name gaf.plugins.t2i.diffusion_pipeline.DiffusionPipeline."""', ["gaf"]),
    ("import gaf.pluginsx", ["gaf"]),  # a different name that merely starts alike
    ("from gaf import config, registry", ["gaf"]),
    ("from . import plugin_tools", ["gaf"]),
    ("from .plugins_list import x", ["gaf"]),
    ("from .images import Dataset", ["gaf", "interfaces"]),  # gaf.interfaces.images
    ("from ..registry import REGISTRY", ["gaf", "interfaces"]),
    ("x = {'target': 'gaf.plugins.t2i.ldm:LDM'}", ["gaf"]),  # a registry target string
    ("importlib.import_module(name)", ["gaf"]),
])
def test_the_checker_passes_what_is_not_a_plugin_import(source, package):
    assert plugin_imports(source, package) == [], source


def test_relative_imports_resolve_from_the_files_own_package():
    assert package_of(CORE / "cli.py") == ["gaf"]
    assert package_of(CORE / "interfaces" / "images.py") == ["gaf", "interfaces"]
    # one level up from gaf.interfaces is gaf: ..plugins is gaf.plugins, .plugins is not
    assert plugin_imports("from .plugins import x", ["gaf", "interfaces"]) == []


def _plugin_modules_after(code: str) -> list[str]:
    script = (f"import sys\n{code}\n"
              f"print('MODULES=' + __import__('json').dumps(sorted(m for m in sys.modules "
              f"if m == {PLUGINS!r} or m.startswith({PLUGINS!r} + '.'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES="))
    return json.loads(line[len("MODULES="):])


@pytest.mark.parametrize("code", [
    "import gaf, gaf.cli",
    "from gaf.cli import main\n"
    "try:\n    main(['sample', '--help'], standalone_mode=False)\n"
    "except SystemExit:\n    pass",
    "from gaf.cli import main\n"
    "try:\n    main(['list', '--json'], standalone_mode=False)\n"
    "except SystemExit:\n    pass",
], ids=["import gaf.cli", "gaf sample --help", "gaf list"])
def test_the_cli_loads_no_plugin_module(code):
    assert _plugin_modules_after(code) == []


def test_the_runtime_check_can_fail():
    found = _plugin_modules_after("import gaf.plugins.images.grid")
    assert {"gaf.plugins", "gaf.plugins.images.grid"} <= set(found)
