"""docs/writing-plugins.md shows the example plugin's files in full ("Here is all of
…"): each shown copy must be the file itself, or the guide drifts from the code that
tests/test_example_plugin.py installs and runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "writing-plugins.md").read_text()


@pytest.mark.parametrize("path, lang", [
    ("examples/gaf-min-p/src/gaf_min_p/__init__.py", "python"),
    ("examples/gaf-min-p/pyproject.toml", "toml"),
])
def test_the_guide_shows_the_example_plugin_files_verbatim(path, lang):
    source = (ROOT / path).read_text().rstrip("\n")
    blocks = [b.rstrip("\n") for b in re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)]
    assert source in blocks, f"docs/writing-plugins.md no longer shows {path} as it is"
