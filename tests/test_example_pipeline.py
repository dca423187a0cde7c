"""The example pipeline package (examples/gaf-noise-pipeline): ``mean-colour``.

* in process, importing the package from its source tree (no install): it meets
  :class:`gaf.interfaces.Pipeline`; its "training" (``fit_colours``) against a float64
  reference; images are the named colour exactly without noise and colour + noise·N(0, 1)
  from generator ``i`` with it (a float64 reference), so an image does not depend on
  its batch; its errors; and ``gaf sample --pipeline`` dispatching to it through a
  registry entry added in the test (the registry the CLI reads is swapped for one
  with the catalogue plus that entry);
* packaging (slow, like the scheduler example's): ``pip install --target``, then
  ``gaf list pipeline`` shows it, ``gaf show pipeline mean-colour`` its options, and
  ``gaf sample --pipeline RUN_DIR`` on a run directory written here writes the PNG.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gaf.cli
from gaf.errors import BadConfig, BadData
from gaf.interfaces import Pipeline
from gaf.registry import Registry
from example_install import gaf_cli, install  # tests/ is on sys.path (conftest)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "gaf-noise-pipeline"
sys.path.insert(0, str(PACKAGE / "src"))

from gaf_noise_pipeline import (  # noqa: E402
    MeanColourPipeline,
    fit_colours,
    write_run,
)

COLOURS = {"red": [1.0, -1.0, -1.0], "blue": [-1.0, -1.0, 1.0], "grey": [0.0, 0.0, 0.0],
           "3": [0.5, 0.25, -0.5]}


def pipe(**kwargs) -> MeanColourPipeline:
    return MeanColourPipeline(COLOURS, resolution=8, background=[1.0, 1.0, 1.0], **kwargs)


def test_meets_the_pipeline_protocol():
    from gaf.config import describe, to_dict

    p = pipe()
    assert isinstance(p, Pipeline)
    assert to_dict(MeanColourPipeline.Options()) == {"noise": 0.0}
    assert [f.name for f in describe(MeanColourPipeline.Options)] == ["noise"]
    assert p.evaluations_per_image(noise=0.3) == 0.0


def test_fit_colours_is_the_mean_colour_of_the_images_naming_each_word():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 4, 6, generator=g) * 2 - 1
    captions = ["a red circle", "a Red square", "blue cross", "a red and blue thing", "none"]
    table = fit_colours(images, captions, ["red", "blue", "green"])
    x = images.double().numpy()
    ref_red = np.mean([x[i].reshape(3, -1).mean(axis=1) for i in (0, 1, 3)], axis=0)
    ref_blue = np.mean([x[i].reshape(3, -1).mean(axis=1) for i in (2, 3)], axis=0)
    assert set(table) == {"red", "blue"}  # no caption names green
    np.testing.assert_allclose(table["red"], ref_red, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(table["blue"], ref_blue, rtol=1e-12, atol=1e-12)
    with pytest.raises(BadConfig, match="2 captions"):
        fit_colours(images, captions[:2], ["red"])


def test_images_are_the_named_colour_without_noise():
    out = pipe()(["a red circle", "BLUE square above a red cross", "nothing known", 3])
    assert out.shape == (4, 3, 8, 8) and out.dtype == torch.float32
    want = [COLOURS["red"], COLOURS["blue"], [1.0, 1.0, 1.0], COLOURS["3"]]
    for image, colour in zip(out, want):  # the first known word wins; a label is a word
        assert torch.equal(image, torch.tensor(colour)[:, None, None].expand(3, 8, 8))


@settings(max_examples=20, deadline=None)
@given(noise=st.floats(0.0, 2.0), seed=st.integers(0, 2**31))
def test_noise_comes_from_each_images_own_generator(noise, seed):
    """image i = clamp(colour + noise·randn(generator i)): a float64 reference, and one
    image sampled alone equals the same image in a batch."""
    p = pipe()
    captions = ["a red circle", "a blue square", "a grey cross"]
    batch = p(captions, seed=seed, noise=noise)
    for i, caption in enumerate(captions):
        draw = torch.randn((3, 8, 8), generator=torch.Generator().manual_seed(seed + i))
        colour = torch.tensor(COLOURS[caption.split()[1]], dtype=torch.float64)
        want = (colour[:, None, None] + noise * draw.double()).clamp(-1, 1)
        assert torch.allclose(batch[i].double(), want, atol=1e-6)
        alone = p([caption], generators=[torch.Generator().manual_seed(seed + i)], noise=noise)
        assert torch.equal(alone[0], batch[i])
    assert batch.min() >= -1 and batch.max() <= 1


def test_bad_requests_are_clear_errors(tmp_path):
    p = pipe()
    with pytest.raises(BadConfig, match="unknown key 'nosie'; did you mean 'noise'"):
        p(["red"], nosie=0.1)
    with pytest.raises(BadConfig, match="noise must be >= 0"):
        p(["red"], noise=-1.0)
    with pytest.raises(BadConfig, match="no prompts"):
        p([])
    with pytest.raises(BadConfig, match="1 generators for 2 conditions"):
        p(["red", "blue"], generators=[torch.Generator()])
    with pytest.raises(BadConfig, match="no colours.json"):
        MeanColourPipeline.from_run(tmp_path)
    write_run(tmp_path, COLOURS)
    with pytest.raises(BadConfig, match="takes no load options, got scheduler"):
        MeanColourPipeline.from_run(tmp_path, scheduler="ddim")
    (tmp_path / "colours.json").write_text("{oops")
    with pytest.raises(BadData, match="colours.json:1"):
        MeanColourPipeline.from_run(tmp_path)


def test_a_run_directory_round_trips(tmp_path):
    run = write_run(tmp_path / "run", COLOURS, resolution=4, background=[0.0, 0.5, 1.0])
    assert json.loads((run / "pipeline.json").read_text())["pipeline"] == "mean-colour"
    p = MeanColourPipeline.from_run(run)
    assert p.resolution == 4 and torch.equal(p.background, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(p(["a blue thing"])[0, :, 0, 0], torch.tensor(COLOURS["blue"]))


@pytest.fixture
def registry_with_the_example(monkeypatch):
    """The CLI's registry: the built-in catalogue, no autoload, plus the example's entry
    as its entry point would add it."""
    registry = Registry(autoload=False)
    registry.add("pipeline", "mean-colour", "gaf_noise_pipeline:MeanColourPipeline",
                 summary="paints each image in the colour its caption names",
                 source="gaf-noise-pipeline")
    monkeypatch.setattr(gaf.cli, "REGISTRY", registry)
    return registry


def test_gaf_sample_dispatches_to_the_pipeline_the_run_names(registry_with_the_example,
                                                              tmp_path):
    run = write_run(tmp_path / "run", COLOURS, resolution=4)
    out = tmp_path / "grid.png"
    args = ["sample", "--pipeline", str(run), "--prompt", "a red circle", "--prompt",
            "a blue square", "-n", "2", "--out", str(out), "-q"]
    result = CliRunner().invoke(gaf.cli.main, args)
    assert result.exit_code == 0, result.output
    assert "4 image(s) written" in result.output
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 6 + 2, 2 * 6 + 2, 3)  # 2 rows of 2 images of 4, 2-pixel padding
    assert (grid[2:6, 2:6] == [255, 0, 0]).all() and (grid[8:12, 8:12] == [0, 0, 255]).all()
    noisy = CliRunner().invoke(gaf.cli.main, [*args, "--option", "noise=0.5"])
    assert noisy.exit_code == 0, noisy.output
    assert not np.array_equal(np.asarray(Image.open(out)), grid)  # the option arrived
    typo = CliRunner().invoke(gaf.cli.main, [*args, "--option", "nosie=0.5"])
    assert typo.exit_code == 2 and "noise" in typo.output and "mean-colour" in typo.output
    steps = CliRunner().invoke(gaf.cli.main, [*args, "--steps", "3"])
    assert steps.exit_code == 2 and "mean-colour" in steps.output and "noise" in steps.output


def test_a_run_naming_an_unknown_pipeline_exits_2_with_close_matches(
        registry_with_the_example, tmp_path):
    run = write_run(tmp_path / "run", COLOURS)
    (run / "pipeline.json").write_text(json.dumps({"pipeline": "mean-color"}))
    result = CliRunner().invoke(gaf.cli.main, ["sample", "--pipeline", str(run), "--prompt",
                                               "red", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "mean-colour" in result.output


def test_gaf_show_lists_the_call_options(registry_with_the_example):
    result = CliRunner().invoke(gaf.cli.main, ["show", "pipeline", "mean-colour"])
    assert result.exit_code == 0, result.output
    assert "noise" in result.output and "gaf-noise-pipeline" in result.output


# ----------------------------------------------------------------------- packaging (slow)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install(PACKAGE, tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_installed_pipeline_is_listed_shown_and_samples_a_run(site, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    listed = gaf_cli(site, "list", "pipeline", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["mean-colour"]["package"] == "gaf-noise-pipeline"
    assert rows["diffusion"]["package"] == "gaf"
    shown = gaf_cli(site, "show", "pipeline", "mean-colour")
    assert shown.returncode == 0, shown.stderr
    assert "gaf_noise_pipeline:MeanColourPipeline" in shown.stdout and "noise" in shown.stdout
    run = write_run(tmp_path / "run", {"red": [1, -1, -1]}, resolution=8)
    out = tmp_path / "red.png"
    sampled = gaf_cli(site, "sample", "--pipeline", str(run), "--prompt", "a red circle",
                      "--option", "noise=0.1", "--out", str(out), "-q")
    assert sampled.returncode == 0, sampled.stderr
    assert "1 image(s) written" in sampled.stdout
    pixels = np.asarray(Image.open(out))[2:10, 2:10].astype(float)
    assert pixels.shape == (8, 8, 3) and pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 55
    bad = gaf_cli(site, "sample", "--pipeline", str(run), "--prompt", "x", "--option",
                  "noise=-1", "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "noise must be >= 0" in bad.stderr
