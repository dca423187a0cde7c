"""The ``image-to-image`` objective: the masked loss against its float64 formula, the
model sees the known pixels clean (Palette), tiny runs of every task train, evaluate
against their baselines and load as a pipeline that keeps the known pixels exactly."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaf
from gaf.errors import BadConfig, BadData
from gaf.plugins.t2i.image_to_image.masks import draw_masks
from gaf.plugins.t2i.image_to_image.objective import (ImageToImage, ImageToImageConfig,
                                                      masked_mse)
from gaf.plugins.t2i.image_to_image.tasks import paste


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), c=st.integers(1, 3))
def test_masked_mse_is_the_mean_over_the_hole_in_float64(seed, c):
    gen = torch.Generator().manual_seed(seed)
    out, target = torch.randn(3, c, 8, 8, generator=gen), torch.randn(3, c, 8, 8, generator=gen)
    m = draw_masks(("box", "stroke", "half"), 3, (8, 8), gen)
    got = masked_mse(out, target, m)
    for i in range(3):
        hole = m[i, 0].bool()
        want = ((out[i].double() - target[i].double()) ** 2)[:, hole].mean()
        torch.testing.assert_close(got[i].double(), want, rtol=1e-6, atol=1e-9)
    changed = out + (1 - m) * 100.0  # outside the hole nothing counts
    torch.testing.assert_close(masked_mse(changed, target, m), got)


class _Recorder(torch.nn.Module):
    prediction_type = "v_prediction"

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, context=None, *, concat=None):
        self.calls.append({"x": x.clone(), "concat": concat.clone()})
        return torch.zeros_like(x)


class _Captions:
    trainable = True
    condition_key = "caption"

    def __call__(self, captions):
        return torch.ones(len(captions), 2, 4)

    def null(self, n):
        return torch.zeros(n, 2, 4)


def test_the_loss_feeds_known_pixels_clean_and_scores_the_hole_only():
    obj = ImageToImage(ImageToImageConfig(task="inpainting"))
    obj.scheduler = gaf.REGISTRY.create("scheduler", "ddpm", prediction_type="v_prediction")
    obj.noise_model, obj.conditioner, obj.frozen = _Recorder(), _Captions(), None
    obj.sample_shape = (3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1, torch.randn(4, 3, 8, 8, generator=gen)
    masks = draw_masks(("box",), 4, (8, 8), gen)
    t = torch.tensor([10, 300, 600, 999])
    batch = {"z0": x0, "noise": noise, "t": t, "masks": masks,
             "drop": torch.tensor([False, True, False, False]), "conditions": ["a"] * 4}
    loss, metrics = obj.loss(batch)
    call = obj.noise_model.calls[0]
    x_t = obj.scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(call["x"], paste(x_t, x0, masks))
    torch.testing.assert_close(call["concat"], torch.cat([x0 * (1 - masks), masks], 1))
    target = obj.scheduler.training_target(x0, noise, t).double()
    want = torch.stack([(target[i] ** 2)[:, masks[i, 0].bool()].mean() for i in range(4)]).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-9)
    assert metrics["dropped"] == 0.25 and 0 < metrics["masked"] < 1


def test_options_are_checked():
    with pytest.raises(BadConfig, match="super-resolution task takes no masks"):
        ImageToImageConfig(task="super-resolution", mask_kinds=("box",))
    with pytest.raises(BadConfig, match="unknown kind 'bx'.*box"):
        ImageToImageConfig(mask_kinds=("bx",))
    assert ImageToImageConfig(task="uncropping").mask_kinds == ("half", "quarter")


@pytest.fixture(params=["inpainting", "uncropping", "super-resolution", "colourisation"])
def tiny_run(request, i2i_run):
    return request.param, i2i_run(request.param)


@pytest.mark.slow
def test_a_tiny_run_of_every_task_reports_against_its_baseline(tiny_run):
    task, run_dir = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    settings_of = {"inpainting": ("box", "grid", "stroke"), "uncropping": ("half", "quarter"),
                   "super-resolution": ("sr",), "colourisation": ("colour",)}[task]
    for s in settings_of:
        for mode in ("caption", "null", "baseline"):
            for metric in ("psnr", "ssim", "exact", "colour"):
                assert f"{s}_{mode}_{metric}" in summary, (s, mode, metric)
    assert summary["real_exact"] >= 0.5  # the evaluator reads the real 16 px scenes
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["pipeline"] == "image-to-image" and meta["task"]["name"] == task


@pytest.mark.slow
def test_the_pipeline_keeps_known_pixels_and_samples_each_image_from_its_seed(tiny_run):
    task, run_dir = tiny_run
    pipe = gaf.REGISTRY.get("pipeline", "image-to-image").from_run(run_dir, scheduler="ddim")
    assert pipe.sample_shape == (3, 16, 16)
    shape = pipe.source_shape
    gen = torch.Generator().manual_seed(0)
    src = torch.rand(3, *shape, generator=gen) * 2 - 1
    masks = draw_masks(("box",), 3, (16, 16), gen) if pipe.uses_masks else None
    caps = ["a red circle", "a blue square", "a green cross"]
    out = pipe(caps, images=src, masks=masks, steps=2, guidance=2.0, seed=5)
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1
    if masks is not None:
        keep = (1 - masks).bool().expand_as(out)
        assert torch.equal(out[keep], src[keep])  # exactly the input's
    alone = pipe(caps[2:], images=src[2:], masks=None if masks is None else masks[2:],
                 steps=2, guidance=2.0, seed=7)
    torch.testing.assert_close(alone[0], out[2], rtol=0, atol=1e-5)
    unconditional = pipe(None, images=src, masks=masks, steps=2, seed=5)
    assert unconditional.shape == out.shape
    assert pipe.evaluations_per_image(steps=2, guidance=2.0) == 5.0
    with pytest.raises(BadData, match="takes"):
        pipe(None, images=torch.zeros(1, shape[0], shape[1] + 1, shape[2]), masks=None, steps=1)
    if pipe.uses_masks:
        with pytest.raises(BadConfig, match="needs a mask"):
            pipe(None, images=src, steps=1)
    else:
        with pytest.raises(BadConfig, match="takes no mask"):
            pipe(None, images=src, masks=torch.ones(3, 1, 16, 16), steps=1)


@pytest.mark.slow
def test_the_table_script_has_a_row_per_setting_and_fill(tiny_run):
    from script_module import load_script  # tests/ is on sys.path (conftest)

    task, run_dir = tiny_run
    text = load_script("examples/image_to_image_table.py").table(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    names = {"inpainting": ("box", "grid", "stroke"), "uncropping": ("half", "quarter"),
             "super-resolution": ("sr",), "colourisation": ("colour",)}[task]
    assert f"({task}; 4 items" in text
    for s in names:
        for fill in ("baseline", "model, no caption", "model, caption"):
            assert f"| {s} | {fill} |" in text, (s, fill)
    assert f"| {summary['real_exact']:.2f} ± " in text.splitlines()[-1]
