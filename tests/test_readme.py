"""CI runs exactly what the README tells a new user (install steps and test command)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ci_block() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text()
    block = text.split("# --- README: tests ---\n", 1)[1].split("# --- end ---", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def readme_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    return [[line for line in b.splitlines() if line.strip()]
            for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_block_verbatim():
    assert ci_block() in readme_blocks()
    assert ci_block()[-1].startswith("pytest")


def test_readme_installs_the_cpu_torch_before_the_project():
    for block in readme_blocks():
        installs = [line for line in block if line.startswith("pip install")]
        if installs:
            assert installs[0] == "pip install torch==2.13.0"
