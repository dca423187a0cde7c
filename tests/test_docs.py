"""Every ```python block of docs/python-api.md runs (each in a fresh interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"
BLOCKS = [(DOC.read_text()[: m.start()].count("\n") + 1, m.group(1))
          for m in re.finditer(r"```python\n(.*?)```", DOC.read_text(), re.S)]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"python-api.md:{n}" for n, _ in BLOCKS])
def test_python_api_examples_run(line, code, tmp_path):
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"docs/python-api.md:{line}\n{out.stderr[-2000:]}"
