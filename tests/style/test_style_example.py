"""examples/style_transfer.py end to end at a tiny size (the random CNN only: nothing to
train): the table, the JSON and the grid it writes, and the synthesis mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "style_transfer.py"


def run_script(monkeypatch, *args):
    spec = importlib.util.spec_from_file_location("style_transfer_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    module.main()


def test_the_results_script_writes_its_table(tmp_path, monkeypatch):
    run_script(monkeypatch, str(tmp_path), "--split", "validation", "--scenes", "2",
               "--textures", "stripes", "--features", "random-cnn", "--steps", "6",
               "--style-weights", "1e3,1e5", "--tag", "t")
    data = json.loads((tmp_path / "style-t.json").read_text())
    rows = data["rows"]
    assert data["meta"]["pairs"] == 2 and data["meta"]["split"] == "validation"
    assert rows["content images (ceiling)"]["shape"] == 1.0
    assert rows["texture alone (floor)"]["style_fraction"] == 0.0
    swept = [k for k in rows if k.startswith("random-cnn")]
    assert len(swept) == 2 and all(0 < rows[k]["style_fraction"] < 1 for k in swept)
    assert rows[swept[1]]["style_fraction"] < rows[swept[0]]["style_fraction"]  # more β
    assert "| content images (ceiling) |" in (tmp_path / "style-t.md").read_text()
    # rows: one per texture; columns: scene, texture, one per setting
    assert Image.open(tmp_path / "grid-t.png").size == (2 + 4 * 34, 2 + 1 * 34)


def test_the_synthesis_mode(tmp_path, monkeypatch):
    run_script(monkeypatch, str(tmp_path), "--synthesis", "--textures", "checks",
               "--features", "random-cnn", "--steps", "3")
    table = json.loads((tmp_path / "style-synthesis.json").read_text())
    assert len(table["random-cnn"]["random-cnn"]) == 3  # three noise seeds
    assert all(0 < v < 1 for v in table["random-cnn"]["random-cnn"])
    assert "synthesised with" in (tmp_path / "style-synthesis.md").read_text()
