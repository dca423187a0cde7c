"""A tiny pixel-space ``ldm`` base run (16 px, v-prediction, 2 steps, no evaluation) that
this directory's ``diffusion-dpo`` runs fine-tune, and pair files of small PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import gaf


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    from tiny_ldm import tiny_ldm_sets  # tests/ is on sys.path (conftest)

    out = tmp_path_factory.mktemp("ddpo-base")
    run_dir, _ = gaf.run("ldm", autoencoder="none", sets=[
        f"out_dir={json.dumps(str(out))}", "name=\"base\"",
        *tiny_ldm_sets(objective__eval_images="0"), "progress=false"])
    return run_dir


def write_png(path, seed, size=16):
    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_pairs(folder, rows):
    """``folder/pairs.jsonl`` with ``rows`` (dicts, or raw strings written as they are);
    the images they name that do not exist are NOT created: call :func:`write_png`."""
    path = folder / "pairs.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture()
def files():
    """The helpers above, for the tests (``files.write_png``, ``files.write_pairs``)."""
    import types

    return types.SimpleNamespace(write_png=write_png, write_pairs=write_pairs)


@pytest.fixture()
def pair_file(tmp_path):
    """A good pairs file: 4 captions of the shapes kind, 8 PNGs (relative paths)."""
    rows = []
    for i in range(4):
        write_png(tmp_path / "img" / f"w{i}.png", 2 * i)
        write_png(tmp_path / "img" / f"l{i}.png", 2 * i + 1)
        rows.append({"prompt": f"a red circle {i}", "chosen": f"img/w{i}.png",
                     "rejected": f"img/l{i}.png"})
    return write_pairs(tmp_path, rows)
