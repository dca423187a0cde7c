"""The core's modules import each other without cycles.

Every file in ``core/`` is parsed with :mod:`ast` (nothing is imported), and every
import of another core module becomes an edge: at module level and inside functions,
relative (``from .registry import X``, ``from . import checkpoint``) or absolute
(``gaf.registry``), but not under ``if TYPE_CHECKING:`` (annotations only, never run).
``from . import name`` is an edge to the submodule when ``core/name.py`` exists, else
to the package (``gaf/__init__.py``). Imports of ``gaf.plugins`` are not core edges.

The allowed direction is written out in docs/architecture.md ("Import direction",
under "The core, module by module"): a cycle means some module reaches back up, e.g.
a lazy import inside a function of a lower module.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
PACKAGE = "gaf"


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_modules(source: str, modules: set[str], depth: int = 0) -> set[str]:
    """The modules of ``modules`` (dotted names in package ``gaf``) that ``source``, a
    module of the flat package ``gaf`` (``depth`` 0) or of one of its subpackages
    (``depth`` 1, e.g. ``gaf.interfaces.lm``), imports. A subpackage is one node: its
    own relative imports (``from .data import X``) are not edges."""
    out: set[str] = set()
    for node in _imports(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level and depth:
            if node.level <= depth:
                continue  # inside the subpackage itself
            node = ast.ImportFrom(module=node.module, names=node.names,
                                  level=node.level - depth, lineno=node.lineno)
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif node.level == 0:
            targets = [node.module or ""]
            if node.module == PACKAGE:  # from gaf import x
                targets = [f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in modules
                           else PACKAGE for a in node.names]
        elif node.level == 1:
            base = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            targets = [base]
            if base == PACKAGE:  # from . import x: a submodule or a name of __init__
                targets = [f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in modules
                           else PACKAGE for a in node.names]
        else:
            raise AssertionError(f"core is one flat package; unexpected import level "
                                 f"{node.level} at line {node.lineno}")
        for target in targets:
            parts = target.split(".")
            if parts[0] != PACKAGE:
                continue  # not gaf: the standard library, torch …
            # gaf.x.y -> gaf.x (core is flat); gaf.plugins.… is not a core module
            name = ".".join(parts[:2])
            if name in modules:
                out.add(name)
    return out


def import_graph(core: Path = CORE) -> dict[str, set[str]]:
    files = {module_name(p): [(p, 0)] for p in sorted(core.glob("*.py"))}
    # a subpackage (core/interfaces/) is one node, gaf.interfaces, made of all its files
    for init in sorted(core.glob("*/__init__.py")):
        files[f"{PACKAGE}.{init.parent.name}"] = [(p, 1) for p in sorted(init.parent.glob("*.py"))]
    graph = {}
    for name, paths in files.items():
        edges = set()
        for path, depth in paths:
            edges |= imported_modules(path.read_text(encoding="utf-8"), set(files), depth)
        # "import gaf.x" also runs gaf/__init__, as does every submodule import: the
        # package edge only counts when a name of __init__ itself is imported.
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_core_import_graph_has_no_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core: " + " -> ".join(cycle)


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert {"gaf", "gaf.registry", "gaf.runs", "gaf.launch", "gaf.train",
            "gaf.components", "gaf.atomic", "gaf.checkpoint"} <= set(graph)
    assert "gaf.train" in graph["gaf.launch"]  # the launcher drives the loop
    assert "gaf.runs" in graph["gaf.train"]  # the loop is given a RunContext
    assert "gaf.registry" in graph["gaf.components"]
    assert "gaf.interfaces" in graph  # a subpackage is one node


def test_registry_does_not_reach_up_to_saving_and_loading():
    graph = import_graph()
    assert not graph["gaf.registry"] & {"gaf.components", "gaf.checkpoint", "gaf.atomic",
                                        "gaf.runs", "gaf.launch", "gaf.train"}
    assert not graph["gaf.runs"] & {"gaf.launch", "gaf.train"}


def test_function_level_imports_count_and_type_checking_ones_do_not():
    modules = {"gaf", "gaf.a", "gaf.b", "gaf.c", "gaf.d"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import a, __version__\n"
        "if TYPE_CHECKING:\n"
        "    from .c import C\n"
        "else:\n"
        "    import gaf.d\n"
        "def f():\n"
        "    from .b import thing\n"
        "    from gaf.plugins.x import y\n"
        "    import gaf.plugins.z, json\n"
        "    from gaf.c.inner import k\n"
    )
    assert imported_modules(source, modules) == {"gaf.a", "gaf", "gaf.b", "gaf.c", "gaf.d"}


def test_a_back_edge_is_reported_as_a_cycle():
    assert find_cycle({"gaf.a": {"gaf.b"}, "gaf.b": {"gaf.c"}, "gaf.c": set()}) is None
    assert find_cycle({"gaf.a": {"gaf.b"}, "gaf.b": {"gaf.c"},
                       "gaf.c": {"gaf.a"}}) == ["gaf.a", "gaf.b", "gaf.c", "gaf.a"]
