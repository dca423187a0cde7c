"""Shared by the example-plugin tests: install an example package into a private
directory and run the CLI with it importable (entry points and all)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def install(package: Path, target: Path) -> Path:
    """``pip install --no-deps --no-build-isolation --target target package``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", "--target", str(target), str(package)], check=True, timeout=300)
    return target


def gaf_cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m gaf ARGS`` with ``site`` on the path and plugin autoload on."""
    env = {k: v for k, v in os.environ.items() if k != "GAF_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "gaf", *args], capture_output=True, text=True,
                          env=env, timeout=300)
