"""RePaint from the command line (``gaf sample --pipeline LDM_RUN --image … --mask …``)
and the inpainting comparison script (examples/inpainting_compare.py) on tiny runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gaf.cli import main
from script_module import load_script  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow

compare = load_script("examples/inpainting_compare.py")


def _files(tmp_path):
    array = np.zeros((16, 16, 3), np.uint8)
    array[4:12, 4:12] = (30, 200, 30)
    Image.fromarray(array).save(tmp_path / "in.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    return tmp_path / "in.png", tmp_path / "m.png", array


def test_a_diffusion_run_inpaints_with_repaint_and_keeps_the_black_region(tiny_pixel_ldm,
                                                                          tmp_path):
    picture, mask, array = _files(tmp_path)
    out = tmp_path / "out.png"
    res = CliRunner().invoke(main, [
        "sample", "--pipeline", str(tiny_pixel_ldm), "--image", str(picture), "--mask",
        str(mask), "--prompt", "a green square", "--steps", "3", "--option", "jump_length=1",
        "--option", "jump_n_sample=2", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cell = np.asarray(Image.open(out))[2:18, 2:18]
    assert np.array_equal(cell[:, :8], array[:, :8])
    bad = CliRunner().invoke(main, [
        "sample", "--pipeline", str(tiny_pixel_ldm), "--image", str(picture), "--mask",
        str(mask), "--option", "jump_lenght=1", "--out", str(tmp_path / "no.png")])
    assert bad.exit_code == 2 and "did you mean 'jump_length'" in bad.output
    no_mask = CliRunner().invoke(main, [
        "sample", "--pipeline", str(tiny_pixel_ldm), "--image", str(picture), "--out",
        str(tmp_path / "no.png")])
    assert no_mask.exit_code == 2 and "give --mask" in no_mask.output
    assert not (tmp_path / "no.png").exists()


def test_the_comparison_script_scores_every_fill_on_every_mask_kind(i2i_run, tiny_pixel_ldm,
                                                                    tmp_path):
    assert compare.main([str(i2i_run("inpainting")), str(tiny_pixel_ldm), "--images", "4",
                         "--steps", "2", "--guidance", "1,2", "--jump-length", "1",
                         "--jump-n-sample", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "inpainting.json").read_text())
    assert set(results["rows"]) == {"box", "grid", "stroke"}
    rows = results["rows"]["box"]
    assert list(rows) == ["background", "inpainter", "inpainter, no caption", "RePaint g=1",
                          "RePaint g=2", "RePaint, no caption", "replacement", "real"]
    assert rows["real"]["psnr"] == 100.0 and rows["real"]["exact"] >= rows["background"]["exact"]
    # guided RePaint: two calls per denoising step of its schedule, + the caption encoder
    from gaf.plugins.diffusion.repaint import denoising_steps

    assert rows["RePaint g=2"]["evaluations_per_image"] == 2 * denoising_steps(2, 1, 2) + 1
    assert rows["replacement"]["evaluations_per_image"] == denoising_steps(2, 1, 1) + 1
    assert (tmp_path / "grid_box.png").is_file() and "| background |" in (
        tmp_path / "inpainting.md").read_text()
