"""``gaf sample --pipeline`` dispatches through the registry (issue 15 §1).

A fake pipeline registered in a private registry (``gaf.cli.REGISTRY`` patched) stands
for any third-party one: the command reads the name from ``pipeline.json`` (a file
without the key means ``diffusion``), builds it with ``from_run`` and the entry's
``defaults`` plus the load options the user gave, passes ``--steps``/``--guidance``/
``--option`` only as the pipeline's ``Options`` allow, and writes the grid with the
core's own ``write_grid``, which draws the same pixels as the plugin helper
``save_grid``. Bad requests exit 2 naming the pipeline and its options.
"""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gaf.cli as cli
from gaf.config import option
from gaf.errors import BadData
from gaf.interfaces import Pipeline
from gaf.registry import Registry


@attrs.define
class FakeOptions:
    shade: float = option(0.0, "added to every pixel", ge=-1, le=1)
    steps: int = option(1, "ignored; present so --steps maps to it", ge=1)


class FakePipeline:
    """Image i is ``shade + u_i`` everywhere, u_i ~ U(-0.5, 0.5) from generator i."""

    Options = FakeOptions
    loads: list[dict] = []
    calls: list[dict] = []

    def __init__(self, size: int):
        self.size = size

    @classmethod
    def from_run(cls, run_dir, *, device="cpu", size=2):
        cls.loads.append({"run_dir": str(run_dir), "device": str(device), "size": size})
        return cls(size)

    def __call__(self, conditions, *, generators=None, seed=0, **options):
        FakePipeline.calls.append({"conditions": list(conditions), "seed": seed, **options})
        opts = FakeOptions(**options)
        gens = generators or [torch.Generator().manual_seed(seed + i)
                              for i in range(len(conditions))]
        u = torch.stack([torch.rand((), generator=g) - 0.5 for g in gens])
        return (opts.shade + u)[:, None, None, None].expand(len(conditions), 3, self.size,
                                                            self.size).clone()

    def evaluations_per_image(self, **options):
        return 1.0


@pytest.fixture
def registry(monkeypatch):
    FakePipeline.loads.clear()
    FakePipeline.calls.clear()
    reg = Registry(autoload=False)
    reg.discover()  # the built-in catalogue first, so that a test may replace an entry
    reg.add("pipeline", "fake", FakePipeline, summary="a test pipeline", defaults={"size": 3})
    monkeypatch.setattr(cli, "REGISTRY", reg)
    return reg


def run_dir(tmp_path, meta):
    d = tmp_path / "run"
    d.mkdir()
    (d / "pipeline.json").write_text(json.dumps(meta))
    return d


def sample(*args):
    return CliRunner().invoke(cli.main, ["sample", *args])


def test_the_fake_meets_the_protocol():
    assert isinstance(FakePipeline(2), Pipeline)


def test_sample_builds_the_named_pipeline_and_passes_the_options(registry, tmp_path):
    d = run_dir(tmp_path, {"pipeline": "fake"})
    out = tmp_path / "grid.png"
    res = sample("--pipeline", str(d), "--prompt", "a", "--prompt", "b", "-n", "2",
                 "--option", "shade=0.5", "--steps", "3", "--seed", "7", "--device", "cpu",
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    # the entry's defaults reach from_run; nothing the user did not give is passed
    assert FakePipeline.loads == [{"run_dir": str(d), "device": "cpu", "size": 3}]
    assert FakePipeline.calls == [{"conditions": ["a", "a", "b", "b"], "seed": 7,
                                   "shade": 0.5, "steps": 3}]  # no progress= (not named)
    # the PNG is the 2 × 2 grid of the images, pad 2 on white
    u = [torch.rand((), generator=torch.Generator().manual_seed(7 + i)).item() - 0.5
         for i in range(4)]
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (2 * 5 + 2, 2 * 5 + 2, 3)
    for i in range(2):
        for j in range(2):
            want = round((min(max(0.5 + u[2 * i + j], -1), 1) + 1) / 2 * 255)
            y, x = 2 + 5 * i, 2 + 5 * j
            assert abs(int(pixels[y, x, 0]) - want) <= 1
            assert (pixels[y:y + 3, x:x + 3] == pixels[y, x]).all()
    assert (pixels[0] == 255).all() and (pixels[:, 0] == 255).all()
    assert "4 image(s) written" in res.output and "row 2: b" in res.output


def test_a_run_without_the_key_is_sampled_by_diffusion(registry, tmp_path):
    registry.add("pipeline", "diffusion", FakePipeline, replace=True)
    d = run_dir(tmp_path, {"objective": "ldm"})  # written before "pipeline" existed
    res = sample("--pipeline", str(d), "--prompt", "x", "--device", "cpu",
                 "--out", str(tmp_path / "g.png"))
    assert res.exit_code == 0, res.output
    assert FakePipeline.calls[0]["conditions"] == ["x"]


@pytest.mark.parametrize("args, message", [
    (["--guidance", "2"], "--guidance guidance: pipeline 'fake'"),
    (["--option", "shadw=0.1"], "has no option 'shadw'; did you mean 'shade'"),
    (["--option", "shade=5"], "pipeline fake: shade must be in [-1, 1], got 5"),
    (["--scheduler", "ddim"], "--scheduler does not apply to pipeline 'fake'"),
    (["--set", "eta=1"], "--set does not apply to pipeline 'fake'"),
    (["--no-ema"], "--ema/--no-ema does not apply to pipeline 'fake'"),
])
def test_an_option_the_pipeline_lacks_exits_2_naming_it(registry, tmp_path, args, message):
    d = run_dir(tmp_path, {"pipeline": "fake"})
    res = sample("--pipeline", str(d), "--prompt", "x", "--device", "cpu",
                 "--out", str(tmp_path / "g.png"), *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    if args[0] == "--guidance":
        assert "its options: shade, steps" in res.output
    assert not FakePipeline.calls


def test_unknown_or_missing_pipelines_exit_2(registry, tmp_path):
    d = run_dir(tmp_path, {"pipeline": "fak"})
    res = sample("--pipeline", str(d), "--prompt", "x")
    assert res.exit_code == 2 and "'fak'" in res.output and "fake" in res.output
    (d / "pipeline.json").write_text(json.dumps({"pipeline": 3}))
    res = sample("--pipeline", str(d), "--prompt", "x")
    assert res.exit_code == 2 and '"pipeline" must name a registered pipeline' in res.output
    res = sample("--pipeline", str(tmp_path), "--prompt", "x")
    assert res.exit_code == 2 and "no pipeline.json" in res.output
    res = sample("--policy", "gpt2-tiny", "--prompt", "x", "--option", "shade=1")
    assert res.exit_code == 2 and "--option sets a call option of an image pipeline" in res.output


def test_show_lists_a_pipelines_call_options(registry, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(cli.main, ["show", "pipeline", "fake"])
    assert res.exit_code == 0, res.output
    assert "call options (gaf sample --option KEY=VALUE)" in res.output
    assert "shade" in res.output and "added to every pixel" in res.output
    assert 'gaf sample load defaults: size=3' in res.output
    monkeypatch.setattr(cli, "REGISTRY", Registry(autoload=False))
    res = CliRunner().invoke(cli.main, ["show", "pipeline", "diffusion"])
    assert res.exit_code == 0, res.output
    assert "steps" in res.output and "guidance" in res.output
    assert 'scheduler="ddim"' in res.output


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(1, 3), c=st.sampled_from([1, 3]),
       h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_write_grid_draws_the_same_pixels_as_save_grid(tmp_path_factory, rows, cols, c, h, w,
                                                       seed):
    from gaf.plugins.images.grid import save_grid

    images = 1.5 * torch.randn(rows * cols, c, h, w,
                               generator=torch.Generator().manual_seed(seed))  # some clamped
    d = tmp_path_factory.mktemp("grid")
    ours = cli.write_grid(images, rows, cols, d / "core.png")
    theirs = save_grid(images.reshape(rows, cols, c, h, w), d / "plugin.png")
    assert np.array_equal(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs)))


def test_write_grid_refuses_what_is_not_a_batch_of_images(tmp_path):
    with pytest.raises(BadData, match=r"expected \(4, C, H, W\)"):
        cli.write_grid(torch.zeros(3, 3, 4, 4), 2, 2, tmp_path / "g.png")
    with pytest.raises(BadData, match="C in 1, 3, 4"):
        cli.write_grid(np.zeros((1, 2, 4, 4)), 1, 1, tmp_path / "g.png")


class FakeVariations(FakePipeline):
    """A fake that makes variations: image i is its input picture plus ``shade``."""

    image_shape = (3, 4, 4)
    seen: list = []

    def variations(self, images, *, seed=0, generators=None, **options):
        FakeVariations.seen.append((images.clone(), seed, options))
        return (images + FakeOptions(**options).shade).clamp(-1, 1)


def test_image_gives_the_pictures_to_variations_resized(registry, tmp_path):
    registry.add("pipeline", "fake-variations", FakeVariations, summary="variations")
    FakeVariations.seen.clear()
    d = run_dir(tmp_path, {"pipeline": "fake-variations"})
    picture = tmp_path / "p.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(picture)  # red, twice the pipeline's side
    out = tmp_path / "grid.png"
    res = sample("--pipeline", str(d), "--image", str(picture), "-n", "3", "--seed", "4",
                 "--option", "shade=0.0", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "resized from 8x8 to 4x4" in res.output and "row 1: " in res.output
    images, seed, options = FakeVariations.seen[0]
    assert images.shape == (3, 3, 4, 4) and seed == 4 and options == {"shade": 0.0}
    torch.testing.assert_close(images[:, 0], torch.ones(3, 4, 4))      # red: +1
    torch.testing.assert_close(images[:, 1:], -torch.ones(3, 2, 4, 4))  # no green, no blue
    assert np.asarray(Image.open(out)).shape == (1 * 6 + 2, 3 * 6 + 2, 3)  # 1 row, 3 columns


def test_image_on_a_pipeline_without_variations_exits_2(registry, tmp_path):
    d = run_dir(tmp_path, {"pipeline": "fake"})
    picture = tmp_path / "p.png"
    Image.new("RGB", (4, 4)).save(picture)
    res = sample("--pipeline", str(d), "--image", str(picture))
    assert res.exit_code == 2 and "makes no variations" in res.output
    res = sample("--pipeline", str(d))
    assert res.exit_code == 2 and "--prompt" in res.output and "--image" in res.output
