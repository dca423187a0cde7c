"""The wheel carries the catalogue, every core and plugin module, and the console script."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (path,) = out.glob("gaf-*.whl")
    return path


def test_wheel_contains_catalogue_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"gaf/registry.toml"}
    expected |= {f"gaf/{p.relative_to(ROOT / 'core')}" for p in (ROOT / "core").rglob("*.py")}
    expected |= {f"gaf/plugins/{p.relative_to(ROOT / 'plugins')}"
                 for p in (ROOT / "plugins").rglob("*.py")}
    expected |= {f"gaf/plugins/lm/tokenizers/{t}/{f}" for f in ("vocab.json", "merges.txt")
                 for t in ("sentiment-bpe", "shapes-bpe")}
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing}"
    catalogue = zipfile.ZipFile(wheel).read("gaf/registry.toml").decode()
    assert catalogue == (ROOT / "registry.toml").read_text()
    meta = [n for n in names if n.endswith("entry_points.txt")]
    assert meta and "gaf = gaf.cli:main" in zipfile.ZipFile(wheel).read(meta[0]).decode()


def test_installed_wheel_resolves_every_builtin(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    code = (
        "import gaf, gaf.plugins, pathlib, sys\n"
        f"assert pathlib.Path(gaf.__file__).is_relative_to({str(target)!r}), gaf.__file__\n"
        "r = gaf.REGISTRY\n"
        "for kind in r.kinds():\n"
        "    for e in r.entries(kind):\n"
        "        e.load()\n"
        "tok = gaf.create('policy', 'gpt2-tiny').tokenizer\n"
        "assert tok.vocab_size > 259 and tok.decode(tok.encode(' a fine film.')) == ' a fine film.'\n"
        "print('OK', len(r.names('policy')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "GAF_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK")
