"""``gaf stylize``: bad input is one ``error:`` line, exit code 2 and no file written;
a tiny run writes the picture; the command's help imports neither torch nor a plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from gaf.cli import main


@pytest.fixture
def pictures(tmp_path):
    content = tmp_path / "content.png"
    canvas = Image.new("RGB", (16, 16), (0, 0, 0))
    canvas.paste((240, 40, 40), (4, 4, 11, 11))
    canvas.save(content)
    style = tmp_path / "style.png"
    Image.new("RGB", (20, 20), (30, 200, 90)).save(style)
    return tmp_path, content, style


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused(args, folder, message):
    before = files(folder)
    result = CliRunner().invoke(main, ["stylize", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert files(folder) == before  # nothing written
    return errors[0]


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(pictures):
    folder, content, style = pictures
    out = str(folder / "out" / "o.png")
    base = ["--content", str(content), "--style", str(style), "--out", out, "--steps", "1"]
    refused(["--content", str(folder / "missing.png"), "--style", str(style), "--out", out],
            folder, "does not exist")
    bad = folder / "bad.png"
    bad.write_text("not an image")
    refused(["--content", str(bad), "--style", str(style), "--out", out], folder, "bad.png")
    refused(["--content", str(content), "--style", str(bad), "--out", out, "--size", "16"],
            folder, "cannot read the image")
    refused([*base[:4], "--out", str(folder / "o.jpg")], folder, "ending in .png")
    refused([*base[:4], "--out", str(folder)], folder, "directory")
    refused([*base[:4], "--out", str(content / "o.png")], folder, "is a file")
    refused([*base, "--features", "random-cn"], folder, "did you mean 'random-cnn'")
    refused([*base, "--features", str(folder / "nets" / "none")], folder, "no such file")
    refused([*base, "--features", "feature-net"], folder, "needs a path")
    refused([*base, "--method", "gatis"], folder, "did you mean 'gatys'")
    refused([*base[:6], "--steps", "0"], folder, "0")
    refused([*base, "--style-weight", "nan"], folder, "finite")
    refused([*base, "--content-weight", "0", "--style-weight", "0"], folder, "style_weight")
    refused(["--content", str(content), "--out", out], folder, "exactly one of --style")
    refused([*base, "--texture", "dots"], folder, "exactly one of --style")
    refused(["--content", str(content), "--texture", "stripe", "--out", out], folder,
            "did you mean 'stripes'")
    refused([*base, "--save-style", out], folder, "is the --out file")
    tiny = folder / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    refused(["--content", str(tiny), "--style", str(style), "--out", out], folder,
            "at least 8x8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_output_directory_is_refused(pictures):
    folder, content, style = pictures
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(["--content", str(content), "--style", str(style), "--out",
                 str(locked / "o.png")], folder, "not writable")
    finally:
        locked.chmod(0o700)


def test_a_tiny_run_writes_the_picture_and_the_style(pictures):
    folder, content, _ = pictures
    out, saved = folder / "new" / "o.png", folder / "s.png"
    result = CliRunner().invoke(main, ["stylize", "--content", str(content), "--texture",
                                       "stripes", "--out", str(out), "--save-style", str(saved),
                                       "--steps", "2", "--size", "12", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "style loss" in result.output and "stripes" in result.output
    assert Image.open(out).size == (12, 12) and Image.open(saved).size == (12, 12)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    again = folder / "again.png"
    CliRunner().invoke(main, ["stylize", "--content", str(content), "--texture", "stripes",
                              "--out", str(again), "--steps", "2", "--size", "12", "--seed",
                              "1"])
    assert Image.open(again).tobytes() == Image.open(out).tobytes()  # deterministic


def test_stylize_help_imports_neither_torch_nor_a_plugin():
    code = ("import sys\nfrom gaf.cli import main\n"
            "try:\n    main(['stylize', '--help'])\nexcept SystemExit:\n    pass\n"
            "import json\nprint(json.dumps(['torch' in sys.modules, "
            "any(m.startswith('gaf.plugins') for m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--texture" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False]
