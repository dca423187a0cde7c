"""``imagen``: a tiny run trains its text encoder, its super-resolution stage and its
base, writes a two-stage cascade and evaluates both; the cascade chains its stages."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import gaf
from gaf.cli import main
from gaf.errors import BadConfig, BadData
from gaf.plugins.diffusion.augmentation import noise_augment
from gaf.plugins.t2i.imagen.pipeline import CascadePipeline, CascadeStage, upsample
from tiny_imagen import TINY  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagen")
    path, _ = gaf.run("imagen", sets=[f"out_dir={json.dumps(str(out))}", "name=\"tiny\"", *TINY])
    return path


def test_the_run_trains_every_stage_and_reports_base_and_cascade(run_dir):
    for sub in ("text_encoder/policy", "super_resolution/noise_model_ema", "noise_model_ema"):
        assert (run_dir / sub / "gaf.json").is_file(), sub
    corpus = (run_dir / "text_encoder" / "captions.jsonl").read_text().splitlines()
    assert corpus and all(json.loads(line)["text"].startswith(" ") for line in corpus)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("base_unseen_exact", "base_g3_dynamic_exact", "base_g1_none_exact",
                "unseen_exact", "aug0.5_exact", "evaluations_per_image"):
        assert key in summary, key
    # base: 2 steps x 2 (guided at 3) + the encoder; the cascade adds 2 unguided SR steps + 1
    assert summary["base_evaluations_per_image"] == 5.0
    assert summary["evaluations_per_image"] == 8.0
    sr = json.loads((run_dir / "super_resolution" / "summary.json").read_text())
    assert {"bicubic_psnr", "sr_a0_psnr", "real_exact"} <= set(sr)
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["pipeline"] == "cascade" and len(meta["stages"]) == 2
    assert meta["stages"][1]["ema_modules"] == {"noise_model": "super_resolution/noise_model_ema"}


def test_the_cascade_samples_each_stage_and_its_base_is_the_base_alone(run_dir):
    pipe = gaf.REGISTRY.get("pipeline", "cascade").from_run(run_dir, scheduler="ddim")
    caps = ["a red circle", "a large blue square"]
    base, final = pipe.sample_stages(caps, seed=3, steps=2, sr_steps=2, guidance=2.0)
    assert base.shape == (2, 3, 16, 16) and final.shape == (2, 3, 32, 32)
    assert final.abs().max() <= 1
    alone = pipe.base()(caps, seed=3, steps=2, guidance=2.0)
    torch.testing.assert_close(alone, base, rtol=0, atol=0)
    torch.testing.assert_close(pipe(caps, seed=3, steps=2, sr_steps=2, guidance=2.0), final,
                               rtol=0, atol=0)
    one = pipe(caps[1:], seed=4, steps=2, sr_steps=2, guidance=2.0)  # seed + i per image
    torch.testing.assert_close(one[0], final[1], rtol=0, atol=1e-6)


class _Recorder(torch.nn.Module):
    """A noise model that records its conditioning inputs and predicts zeros."""

    prediction_type = "epsilon"

    def __init__(self, concat_channels: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"concat_channels": concat_channels})()
        self.calls: list[dict] = []

    def forward(self, x, t, context=None, *, concat=None, noise_level=None):
        self.calls.append({"x": x.clone(), "concat": concat, "noise_level": noise_level})
        return torch.zeros_like(x)


def test_each_stage_gets_the_previous_output_upsampled_and_noise_augmented():
    """Three stages 4 → 8 → 16 px with recording models: every later stage's ``concat``
    is the previous stage's output, upsampled and noised to ``aug_level`` with the noise
    that follows the image's own generator, and ``noise_level`` is the level."""
    sched = gaf.create("scheduler", "ddim", prediction_type="epsilon")
    models = [_Recorder(0), _Recorder(3), _Recorder(3)]
    stages = [CascadeStage(m, sched, (3, s, s)) for m, s in zip(models, (4, 8, 16))]
    pipe = CascadePipeline(stages)
    outs = pipe.sample_stages(["x", "y"], seed=5, steps=2, sr_steps=2, aug_level=0.3,
                              thresholding="static")
    assert [tuple(o.shape[-2:]) for o in outs] == [(4, 4), (8, 8), (16, 16)]
    for k in (1, 2):
        gens = [torch.Generator().manual_seed(5 + i) for i in range(2)]
        # replay each generator: its stage draws (the initial noise and any later ones) first
        for stage_k in range(k + 1):
            shape = stages[stage_k].sample_shape
            for g in gens:
                torch.randn(shape, generator=g)
            if stage_k < k and stage_k > 0:
                for g in gens:
                    torch.randn(shape, generator=g)
        noise = torch.stack([torch.randn(stages[k].sample_shape, generator=g) for g in gens])
        want = noise_augment(upsample(outs[k - 1], stages[k].sample_shape, "bilinear"), 0.3,
                             noise)
        for call in models[k].calls:
            torch.testing.assert_close(call["concat"], want, rtol=0, atol=1e-6)
            assert call["noise_level"] == 0.3
    assert all(c["concat"] is None for c in models[0].calls)


def test_a_cascade_refuses_stages_in_the_wrong_order():
    sched = gaf.create("scheduler", "ddim", prediction_type="epsilon")
    with pytest.raises(BadConfig, match="first stage"):
        CascadePipeline([CascadeStage(_Recorder(3), sched, (3, 8, 8))])
    with pytest.raises(BadConfig, match="stage 1"):
        CascadePipeline([CascadeStage(_Recorder(0), sched, (3, 4, 4)),
                         CascadeStage(_Recorder(0), sched, (3, 8, 8))])


def test_a_damaged_stage_names_the_file_and_field(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "features*"))
    meta = json.loads((copy / "pipeline.json").read_text())
    meta["stages"][1]["sample_shape"] = [3, -1, 32]
    (copy / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(BadData, match=r"stages\[1\]\.sample_shape"):
        CascadePipeline.from_run(copy)
    meta["stages"] = []
    (copy / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(BadData, match="stages"):
        CascadePipeline.from_run(copy)


def test_gaf_sample_runs_the_chain_and_saves_each_stage(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run_dir), "--prompt",
                                       "a red circle", "-n", "2", "--steps", "2", "--option",
                                       "sr_steps=2", "--stages", "-q", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "grid_stage1.png").is_file()
    bad = CliRunner().invoke(main, ["sample", "--pipeline", str(run_dir), "--prompt", "x",
                                    "--option", "aug_level=2", "-q", "--out", str(out)])
    assert bad.exit_code == 2 and "aug_level" in bad.output
