"""A whole ``gan-int-cls`` run at 16x16 (seconds): the shared evaluation's figures, the
paper's two figure grids, the ``gan`` pipeline through ``gaf sample``, images that do
not depend on their batch, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import gaf
from gaf.cli import main
from gaf.errors import BadConfig
from gaf.plugins.t2i.gan.pipeline import GANPipeline

pytestmark = pytest.mark.slow

SMALL = ["dataset.resolution=16", "dataset.size=300", "generator.resolution=16",
         "generator.width=8", "generator.text_dim=16", "discriminator.resolution=16",
         "discriminator.width=8", "discriminator.text_dim=16", "train.steps=20",
         "train.batch_size=16", "train.log_every=5", "objective.eval_images=20",
         "objective.eval_clip_steps=5", "objective.throughput_batch=10",
         "objective.grid_prompts=4", "progress=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    out = tmp_path_factory.mktemp("gan-run")
    return gaf.run("gan-int-cls", sets=[f"out_dir={json.dumps(str(out))}", "name=\"gan\"",
                                        f"conditioner.clip={json.dumps(str(tiny_clip))}",
                                        *SMALL])


def test_the_shared_evaluation_and_the_figures(run):
    run_dir, s = run
    for key in ("unseen_colour", "floor_colour", "ceiling_colour", "diversity_position",
                "swapped_pair_binding", "clip_score", "clip_r_precision", "fd", "kid",
                "images_per_s"):
        assert key in s, key
    assert s["evaluations_per_image"] == 2.0  # the generator and the text encoder
    clip = gaf.load("encoder", gaf_clip_dir(run_dir))
    text_tower = sum(p.numel() for p in clip.text_encoder.parameters())
    assert s["frozen_parameters"] > text_tower  # the text tower and its projection ...
    assert s["frozen_parameters"] < sum(  # ... not the image tower loaded with them
        p.numel() for p in clip.parameters())
    assert s["trainable_parameters"] > 0
    clip_seconds = json.loads((gaf_clip_dir(run_dir) / "summary.json").read_text())
    assert s["train_wall_s"] > clip_seconds["train_s"]  # the CLIP's training counted
    for name, rows, cols in (("interpolation", 4, 8), ("noise", 4, 8)):
        image = Image.open(run_dir / "samples" / f"{name}.png")
        assert image.size == (2 + cols * 18, 2 + rows * 18)
        assert (run_dir / "samples" / f"{name}.txt").read_text().count("row ") == rows
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"d_real", "d_fake", "d_wrong", "g_int", "d_loss", "g_loss"} <= set(log[-1])


def gaf_clip_dir(run_dir):
    meta = json.loads((run_dir / "pipeline.json").read_text())
    from pathlib import Path

    return Path(meta["conditioner"]["options"]["clip"])


def test_an_image_does_not_depend_on_its_batch(run):
    pipe = GANPipeline.from_run(run[0])
    together = pipe(["a red circle", "a blue square"], seed=3)
    alone = pipe(["a blue square"], seed=4)
    torch.testing.assert_close(together[1:], alone)
    assert together.shape == (2, 3, 16, 16) and float(together.abs().max()) <= 1
    assert pipe.evaluations_per_image() == 2.0
    with pytest.raises(BadConfig, match="has no option steps"):
        pipe(["a red circle"], steps=3)
    small = pipe(["a blue square"], seed=4, z_scale=1e-6)
    assert not torch.equal(small, alone)  # the noise's scale reaches the generator


def test_gaf_sample_draws_from_the_run(run, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--prompt",
                                       "a red circle", "--num", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 + 3 * 18, 2 + 18)
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--prompt",
                                       "a red circle", "--steps", "3", "--out", str(out)])
    assert result.exit_code == 2 and "has no option 'steps'" in result.output
    result = CliRunner().invoke(main, ["sample", "--pipeline", str(run[0]), "--prompt",
                                       "a red circle", "--option", "z_scale=0.5", "--out",
                                       str(out)])
    assert result.exit_code == 0, result.output


def test_other_runs_are_refused(tmp_path, tiny_clip):
    with pytest.raises(BadConfig, match="not a gan run"):
        GANPipeline.from_run(tmp_path)
    with pytest.raises(BadConfig, match="not 'gan'"):
        (tmp_path / "pipeline.json").write_text('{"pipeline": "diffusion"}')
        GANPipeline.from_run(tmp_path)
    # a hand-edited file names the field (the reader is the diffusion pipeline's)
    (tmp_path / "pipeline.json").write_text('{"pipeline": "gan", "modules": {}}')
    with pytest.raises(gaf.errors.BadData, match="field 'modules.generator': missing"):
        GANPipeline.from_run(tmp_path)
    (tmp_path / "generator").mkdir()
    (tmp_path / "pipeline.json").write_text(
        '{"pipeline": "gan", "modules": {"generator": "generator"}}')
    with pytest.raises(gaf.errors.BadData, match="field 'conditioner': missing"):
        GANPipeline.from_run(tmp_path)


def test_shapes_that_do_not_fit_name_the_options(tmp_path, tiny_clip):
    base = [f"out_dir={json.dumps(str(tmp_path))}",
            f"conditioner.clip={json.dumps(str(tiny_clip))}", "dataset.resolution=16",
            "dataset.size=40", "train.steps=1", "progress=false"]
    with pytest.raises(BadConfig, match="set generator.out_channels=3 and "
                                        "generator.resolution=16"):
        gaf.run("gan-int-cls", sets=base)
    with pytest.raises(BadConfig, match="set generator.text_dim=16"):
        gaf.run("gan-int-cls", sets=[*base, "generator.resolution=16",
                                     "discriminator.resolution=16"])


def test_a_text_encoder_trained_jointly_with_the_discriminator(tmp_path):
    # --conditioner text-transformer: no CLIP; the encoder is in the discriminator's
    # parameter group, moves in training, is exported and samples back
    from gaf.registry import REGISTRY
    from gaf.runs import RunContext
    from gaf.spec import resolve

    sets = [f"out_dir={json.dumps(str(tmp_path))}", "conditioner.width=16",
            "conditioner.layers=1", "conditioner.heads=2", "dataset.resolution=16",
            "dataset.size=100", "generator.resolution=16", "generator.width=8",
            "generator.text_dim=16", "discriminator.resolution=16", "discriminator.width=8",
            "discriminator.text_dim=16", "train.steps=3", "train.batch_size=8",
            "objective.eval_images=0", "progress=false"]
    run_dir, s = gaf.run("gan-int-cls", conditioner="text-transformer", sets=sets)
    meta = json.loads((run_dir / "pipeline.json").read_text())
    assert meta["modules"] == {"generator": "generator", "conditioner": "conditioner"}
    assert not (run_dir / "clip").exists()
    pipe = GANPipeline.from_run(run_dir)
    assert pipe(["a red circle"]).shape == (1, 3, 16, 16)
    # the run's initial encoder: the same spec set up again (the trainer seeds first)
    spec = resolve(objective="gan-int-cls", components={"conditioner": "text-transformer"},
                   sets=sets)
    obj = REGISTRY.get("objective", "gan-int-cls")(spec.objective_config)
    torch.manual_seed(spec.seed)
    obj.setup(RunContext(spec, tmp_path / "again"))
    groups = obj.param_groups()
    assert {id(p) for p in obj.conditioner.parameters() if p.requires_grad} <= \
        {id(p) for p in groups[1]["params"]}
    trained = gaf.load("conditioner", run_dir / "conditioner").state_dict()
    initial = obj.conditioner.state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert "token_embedding.weight" in moved
