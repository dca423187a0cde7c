"""``gaf sample --pipeline RUN --image in.png [--mask m.png] [--prompt …] --out out.png``
on tiny image-to-image runs: the output keeps the known pixels, and every bad input is
one line, exit code 2, with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gaf.cli import main

pytestmark = pytest.mark.slow


def sample(*args):
    return CliRunner().invoke(main, ["sample", *args])


def _picture(path, size=16, colour=(200, 30, 30)):
    array = np.zeros((size, size, 3), np.uint8)
    array[4:12, 4:12] = colour
    Image.fromarray(array).save(path)
    return path


def _mask(path, size=16, box=(0, 8, 0, 16), fmt="PNG"):
    array = np.zeros((size, size), np.uint8)
    r0, r1, c0, c1 = box
    array[r0:r1, c0:c1] = 255
    Image.fromarray(array).save(path, format=fmt)
    return path


def test_inpainting_keeps_the_black_region_of_the_mask(i2i_run, tmp_path):
    run = i2i_run("inpainting")
    picture, mask = _picture(tmp_path / "in.png"), _mask(tmp_path / "m.png")
    out = tmp_path / "out.png"
    res = sample("--pipeline", str(run), "--image", str(picture), "--mask", str(mask),
                 "--prompt", "a red square", "--steps", "2", "-q", "--out", str(out))
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 18, 2 + 18, 3)
    cell = grid[2:18, 2:18]
    source = np.asarray(Image.open(picture))
    assert np.array_equal(cell[8:], source[8:])  # the kept (black) half, pixel for pixel
    two = sample("--pipeline", str(run), "--image", str(picture), "--image", str(picture),
                 "--mask", str(mask), "-n", "2", "--steps", "1", "-q", "--out",
                 str(tmp_path / "two.png"))
    assert two.exit_code == 0, two.output
    assert Image.open(tmp_path / "two.png").size == (2 + 2 * 18, 2 + 2 * 18)


def test_super_resolution_takes_the_low_resolution_picture(i2i_run, tmp_path):
    run = i2i_run("super-resolution")
    picture = _picture(tmp_path / "low.png", size=4)
    out = tmp_path / "sr.png"
    res = sample("--pipeline", str(run), "--image", str(picture), "--steps", "2", "-q",
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (2 + 16 + 2, 2 + 16 + 2)
    wrong = sample("--pipeline", str(run), "--image", str(_picture(tmp_path / "big.png")),
                   "--steps", "1", "-q", "--out", str(tmp_path / "no.png"))
    assert wrong.exit_code == 2 and "is 16x16; the run takes 4x4" in wrong.output
    masked = sample("--pipeline", str(run), "--image", str(picture), "--mask",
                    str(_mask(tmp_path / "m4.png", size=4, box=(0, 2, 0, 4))), "--out",
                    str(tmp_path / "no.png"))
    assert masked.exit_code == 2 and "takes no mask" in masked.output
    assert not (tmp_path / "no.png").exists()


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(i2i_run, tmp_path):
    run = str(i2i_run("inpainting"))
    picture, out = _picture(tmp_path / "in.png"), tmp_path / "out.png"
    jpeg = _mask(tmp_path / "m.jpg", box=(3, 11, 3, 11), fmt="JPEG")
    empty = _mask(tmp_path / "empty.png", box=(0, 0, 0, 0))
    full = _mask(tmp_path / "full.png", box=(0, 16, 0, 16))
    small = _mask(tmp_path / "small.png", size=8)
    garbage = tmp_path / "garbage.png"
    garbage.write_text("not an image")
    cases = {
        "not black and white": ["--image", str(picture), "--mask", str(jpeg)],
        "mask is empty": ["--image", str(picture), "--mask", str(empty)],
        "mask is full": ["--image", str(picture), "--mask", str(full)],
        "the mask is 8x8; the pictures are 16x16": ["--image", str(picture), "--mask",
                                                    str(small)],
        "cannot read the image": ["--image", str(garbage), "--mask", str(empty)],
        "give --mask": ["--image", str(picture)],
        "makes images from pictures": ["--prompt", "a red circle"],
        "2 --prompt for 1 --image": ["--image", str(picture), "--mask", str(jpeg),
                                     "--prompt", "a", "--prompt", "b"],
        "--mask needs --image": ["--prompt", "a", "--mask", str(empty)],
    }
    for needle, args in cases.items():
        res = sample("--pipeline", run, *args, "--steps", "1", "-q", "--out", str(out))
        assert res.exit_code == 2, (needle, res.output)
        assert needle in res.output, (needle, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
        assert not out.exists(), needle
