"""Import a script that is not a package module (``examples/timeline.py``,
``benchmarks/…``) under a name of its own, for the tests of that script."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The module defined by ``ROOT/relative``, imported as ``<stem>_under_test``."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
